"""kill -9 the worker in the middle of a turn: the turn completes on another, nothing twice."""

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.providers.scripted import tool_script
from api.service import SessionService
from common.ids import workflow_id
from common.settings import Settings
from devstack.server import start_dev_env
from tests.processes import free_port, poll_reply, running, stack_env, start, start_gateway
from workflows.messages import SendMessage, SessionConfig, SessionStatus, ToolDecision


async def test_worker_killed_mid_turn_loses_and_duplicates_nothing(
    dev_env: WorkflowEnvironment,
) -> None:
    environ = stack_env(dev_env, f"tq-crash-{uuid.uuid4().hex[:8]}")
    first_worker = start("worker", environ)
    gateway = start_gateway(environ)
    with running(gateway.process, first_worker):
        alice = gateway.client()
        session_id = (await alice.post("/v1/sessions", json={})).json()["session_id"]
        sent = await alice.post(
            f"/v1/sessions/{session_id}/messages?wait=false",
            json={"content": "[[delay=6]] survive this", "message_id": "crash-1"},
        )
        assert sent.status_code == 202
        handle = dev_env.client.get_workflow_handle(workflow_id("alice", session_id))
        await wait_for_running_activity(handle)

        first_worker.kill_hard()
        second_worker = start("worker", environ)
        with running(second_worker):
            reply = await poll_reply(alice, sent.headers["Location"], seconds=60)
            history = (await alice.get(f"/v1/sessions/{session_id}/messages")).json()
        assert reply["reply"]["content"] == "echo: survive this"
        assert [(m["role"], m["id"]) for m in history["messages"]] == [
            ("user", "crash-1"),
            ("assistant", "crash-1.reply"),
        ]
        # The model call really was cut off and run again, by the second worker.
        started = [
            e.activity_task_started_event_attributes.attempt
            for e in (await handle.fetch_history()).events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        ]
        assert started[-1] >= 2
        await alice.aclose()


async def wait_for_running_activity(handle: WorkflowHandle[Any, Any]) -> None:
    for _ in range(100):
        description = await handle.describe()
        pending = description.raw_description.pending_activities
        if any(p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED for p in pending):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the model call never started")


async def test_worker_killed_between_tool_calls_repeats_no_finished_call(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Three tool steps; kill -9 the worker while the third runs. The first two are not run
    again (their results are in the workflow's history); the third is retried; one reply."""
    log = tmp_path / "tool-calls.log"
    environ = {
        **stack_env(
            dev_env, f"tq-crash-{uuid.uuid4().hex[:8]}", tool_modules=["tests.tool_fixtures"]
        ),
        "CHAT_TEST_TOOL_LOG": str(log),
    }
    first_worker = start("worker", environ)
    gateway = start_gateway(environ)
    with running(gateway.process, first_worker):
        alice = gateway.client()
        created = await alice.post("/v1/sessions", json={"tools": ["step"]})
        session_id = created.json()["session_id"]
        steps = [[("step", {"n": n, "seconds": seconds})] for n, seconds in STEPS]
        sent = await alice.post(
            f"/v1/sessions/{session_id}/messages?wait=false",
            json={"content": "three steps " + tool_script(*steps), "message_id": "t-1"},
        )
        assert sent.status_code == 202, sent.text
        await wait_for_line(log, "start 3")

        first_worker.kill_hard()
        second_worker = start("worker", environ)
        with running(second_worker):
            reply = await poll_reply(alice, sent.headers["Location"], seconds=90)
            history = (await alice.get(f"/v1/sessions/{session_id}/messages")).json()
        await alice.aclose()

    assert reply["reply"]["content"] == "echo: three steps [tools: step 3 done]"
    lines = log.read_text().splitlines()
    starts = Counter(line.split()[1] for line in lines if line.startswith("start"))
    assert starts == {"1": 1, "2": 1, "3": 2}, lines  # only the interrupted call ran again
    assert sum(line.startswith("done 3") for line in lines) == 1
    # The retry carried the same idempotency key as the interrupted attempt.
    keys = {line.split()[2] for line in lines if line.startswith("start 3")}
    assert len(keys) == 1
    roles = [m["role"] for m in history["messages"]]
    assert roles == ["user"] + ["assistant", "tool"] * 3 + ["assistant"]


STEPS = [(1, 0.1), (2, 0.1), (3, 4.0)]


async def wait_for_line(path: Path, prefix: str, seconds: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if has_line(path, prefix):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no line starting {prefix!r} in {path} within {seconds} s")


async def test_pending_approval_survives_worker_and_server_restarts(tmp_path: Path) -> None:
    """A turn waiting for approval; kill -9 the worker, restart the Temporal server on the same
    SQLite file, start a new worker: the call is still pending, and approving it completes
    the turn."""
    port = free_port()
    options: dict[str, Any] = {
        "port": port,
        "dev_server_database_filename": str(tmp_path / "temporal.db"),
    }
    env = await start_dev_env(**options)
    environ = stack_env(env, f"tq-restart-{uuid.uuid4().hex[:8]}", tool_modules=TOOL_MODULES)
    service = SessionService(env.client, Settings(_env_file=None, **settings_of(environ)))
    worker = start("worker", environ)
    try:
        await service.create("alice", "approve-me", SessionConfig(model=MODEL, tools=["send_note"]))
        content = "note " + tool_script([("send_note", {"text": "hi"})])
        await service.send("alice", "approve-me", SendMessage(message_id="a-1", content=content))
        before = await wait_for_pending(service)
    finally:
        worker.kill_hard()
        await env.shutdown()

    env = await start_dev_env(**options)
    service = SessionService(env.client, Settings(_env_file=None, **settings_of(environ)))
    worker = start("worker", environ)
    try:
        with running(worker):
            after = await wait_for_pending(service)
            assert after.pending_approvals == before.pending_approvals
            decision = ToolDecision(call_id=after.pending_approvals[0].call_id, approve=True)
            await service.decide_tool_call("alice", "approve-me", decision)
            for _ in range(200):
                lookup = await service.reply("alice", "approve-me", "a-1")
                if lookup.reply is not None:
                    break
                await asyncio.sleep(0.1)
            assert (
                lookup.reply is not None and lookup.reply.content == "echo: note [tools: sent: hi]"
            )
    finally:
        await env.shutdown()


def has_line(path: Path, prefix: str) -> bool:
    return path.exists() and any(line.startswith(prefix) for line in path.read_text().splitlines())


TOOL_MODULES = ["tests.tool_fixtures"]
MODEL = "scripted/echo"


def settings_of(environ: dict[str, str]) -> dict[str, Any]:
    """The settings a process started with `environ` reads, for an in-test gateway service."""
    return {
        key[len("CHAT_") :].lower(): json.loads(value) if value[:1] in "[{" else value
        for key, value in environ.items()
        if key.startswith("CHAT_")
    }


async def wait_for_pending(service: SessionService) -> SessionStatus:
    for _ in range(300):
        try:
            status = await service.status("alice", "approve-me")
        except (RPCError, WorkflowQueryFailedError):  # the new worker is still starting
            status = None
        if status is not None and status.pending_approvals:
            assert status.status == "awaiting_approval"
            return status
        await asyncio.sleep(0.1)
    raise AssertionError("the call never showed as pending")
