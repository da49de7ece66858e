"""kill -9 the worker in the middle of a slow model call: the turn completes on another."""

import asyncio
import uuid
from typing import Any

from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from common.ids import workflow_id
from tests.processes import poll_reply, running, stack_env, start, start_gateway


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
