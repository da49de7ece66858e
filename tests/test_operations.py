"""What an operator sees and does: the Temporal CLI, UI summaries, search attributes, SIGTERM."""

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from common.ids import workflow_id
from devstack.server import binary
from tests.processes import Gateway, running, serving, stack_env, start, start_gateway


@pytest.fixture(scope="module")
def environ(dev_env: WorkflowEnvironment) -> dict[str, str]:
    return stack_env(dev_env, f"tq-ops-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def gateway(environ: dict[str, str]) -> Iterator[Gateway]:
    with serving(environ) as gw:
        yield gw


def temporal_cli(env: WorkflowEnvironment, *args: str) -> str:
    address = env.client.service_client.config.target_host
    done = subprocess.run(
        [str(binary("temporal")), *args, "--address", address],
        capture_output=True,
        timeout=30,
        check=True,
    )
    return done.stdout.decode()


async def wait_for(check: Any, seconds: float = 10) -> None:
    for _ in range(int(seconds * 10)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_a_message_signalled_from_the_temporal_cli_is_answered(
    dev_env: WorkflowEnvironment, gateway: Gateway
) -> None:
    alice = gateway.client()
    session_id = (await alice.post("/v1/sessions", json={})).json()["session_id"]
    payload = json.dumps({"message_id": "from-cli", "content": "hello from the CLI"})
    await asyncio.to_thread(
        temporal_cli,
        dev_env,
        "workflow", "signal",
        "--workflow-id", workflow_id("alice", session_id),
        "--name", "send_message",
        "--input", payload,
    )  # fmt: skip

    async def answered() -> bool:
        response = await alice.get(f"/v1/sessions/{session_id}/messages/from-cli")
        return response.status_code == 200

    await wait_for(answered)
    history = (await alice.get(f"/v1/sessions/{session_id}/messages")).json()["messages"]
    assert [m["content"] for m in history] == ["hello from the CLI", "echo: hello from the CLI"]


async def test_sessions_are_readable_and_filterable_in_temporal(
    dev_env: WorkflowEnvironment, gateway: Gateway
) -> None:
    bob = gateway.client("test-key-bob")
    session_id = (await bob.post("/v1/sessions", json={})).json()["session_id"]
    await bob.post(f"/v1/sessions/{session_id}/messages", json={"content": "hi"})
    handle = dev_env.client.get_workflow_handle(workflow_id("bob", session_id))

    description = await handle.describe()
    assert await description.static_summary() == "chat session of **bob** · scripted/echo"
    scheduled = [
        e
        for e in (await handle.fetch_history()).events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    summary = dev_env.client.data_converter.payload_converter.from_payload(
        scheduled[-1].user_metadata.summary, str
    )
    assert summary == "scripted/echo · turn 1"

    query = f'ChatOwner = "bob" AND WorkflowId = "{handle.id}"'

    async def listed() -> bool:
        out = await asyncio.to_thread(temporal_cli, dev_env, "workflow", "list", "--query", query)
        return handle.id in out

    await wait_for(listed)
    await bob.delete(f"/v1/sessions/{session_id}")
    ended = f'ChatOwner = "bob" AND ChatStatus = "ended" AND WorkflowId = "{handle.id}"'

    async def listed_as_ended() -> bool:
        out = await asyncio.to_thread(temporal_cli, dev_env, "workflow", "list", "--query", ended)
        return handle.id in out

    await wait_for(listed_as_ended)
    await bob.aclose()


async def test_sigterm_lets_a_running_turn_finish(dev_env: WorkflowEnvironment) -> None:
    """A graceful stop drains: the model call in flight completes on the same attempt."""
    environ = stack_env(dev_env, f"tq-drain-{uuid.uuid4().hex[:8]}")  # no other worker on it
    worker = start("worker", environ)
    gateway = start_gateway(environ)
    with running(gateway.process, worker):
        alice = gateway.client()
        session_id = (await alice.post("/v1/sessions", json={})).json()["session_id"]
        sending = asyncio.create_task(
            alice.post(
                f"/v1/sessions/{session_id}/messages", json={"content": "[[delay=3]] drain me"}
            )
        )
        handle = dev_env.client.get_workflow_handle(workflow_id("alice", session_id))

        async def running_activity() -> bool:
            return bool((await handle.describe()).raw_description.pending_activities)

        await wait_for(running_activity)
        await asyncio.to_thread(worker.stop)  # SIGTERM, then wait for the process to exit
        assert worker.proc.returncode == 0
        replacement = start("worker", environ)  # for the workflow task that records the reply
        with running(replacement):
            response = await sending
        assert response.status_code == 200
        assert response.json()["reply"]["content"] == "echo: drain me"
        attempts = [
            e.activity_task_started_event_attributes.attempt
            for e in (await handle.fetch_history()).events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        ]
        assert attempts == [1]
        await alice.aclose()
