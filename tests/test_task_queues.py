"""Session workflows and model/tool calls on separate task queues, run by separate workers."""

import asyncio
import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from activities.providers.scripted import tool_script
from common.ids import workflow_id
from common.live_streams import stream_url_of
from tests.conftest import scripted_settings
from tests.processes import poll_reply, running, stack_env, start, start_gateway
from worker.build import build_workers


async def test_model_and_tool_calls_run_only_on_the_activity_queue(
    dev_env: WorkflowEnvironment,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    environ = stack_env(dev_env, f"tq-sessions-{suffix}", activity_task_queue=f"tq-calls-{suffix}")
    sessions = start("worker", {**environ, "CHAT_WORKER_ROLE": "sessions"})
    gateway = start_gateway(environ)
    with running(gateway.process, sessions):
        alice = gateway.client()
        created = await alice.post("/v1/sessions", json={"tools": ["calculate"]})
        session_id = created.json()["session_id"]
        sent = await alice.post(
            f"/v1/sessions/{session_id}/messages?wait=false",
            json={"content": "sum " + tool_script([("calculate", {"expression": "6*7"})])},
        )
        assert sent.status_code == 202, sent.text
        # With no worker on the activity queue, the turn waits (nothing is lost meanwhile).
        await asyncio.sleep(2)
        pending = await alice.get(sent.headers["Location"])
        assert pending.status_code == 202 and pending.json()["status"] == "working"

        calls = start("worker", {**environ, "CHAT_WORKER_ROLE": "activities"})
        with running(calls):
            reply = await poll_reply(alice, sent.headers["Location"], seconds=30)
        assert reply["reply"]["content"] == "echo: sum [tools: 42]"

        handle = dev_env.client.get_workflow_handle(workflow_id("alice", session_id))
        scheduled = [
            (
                e.activity_task_scheduled_event_attributes.activity_type.name,
                e.activity_task_scheduled_event_attributes.task_queue.name,
            )
            for e in (await handle.fetch_history()).events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        ]
        calls_queue = f"tq-calls-{suffix}"
        assert scheduled == [
            ("generate_reply", calls_queue),
            ("run_tool", calls_queue),
            ("generate_reply", calls_queue),
        ]
        await alice.aclose()


async def test_roles_decide_which_queues_a_process_polls(dev_env: WorkflowEnvironment) -> None:
    def queues(role: str, split: bool, stream_url: str | None = None) -> list[str]:
        # Fresh queue names each time: the SDK allows one worker per queue and client.
        tag = uuid.uuid4().hex[:8]
        settings = scripted_settings(f"s-{tag}").model_copy(
            update={"worker_role": role, "activity_task_queue": f"a-{tag}" if split else None}
        )
        workers = build_workers(dev_env.client, settings, stream_url=stream_url)
        return [w.task_queue.split("-")[0] for w in workers]

    assert queues("all", split=False) == ["s"]
    # Serving live replies: the model calls get a worker of their own (its identity names the
    # stream server), so the sessions' workflow tasks record the short default identity.
    assert queues("all", split=False, stream_url="http://127.0.0.1:1") == ["s", "s"]
    settings = scripted_settings(f"s-{uuid.uuid4().hex[:8]}")
    sessions, calls = build_workers(dev_env.client, settings, stream_url="http://127.0.0.1:1")
    assert sessions.config()["workflows"] and not sessions.config().get("identity")
    assert not calls.config()["workflows"]
    assert stream_url_of(calls.config().get("identity") or "") == "http://127.0.0.1:1"
    assert stream_url_of("7@host stream=http://10.0.0.2:9") == "http://10.0.0.2:9"  # older form
    assert stream_url_of("7@host") is None
    assert queues("all", split=True) == ["s", "a"]
    assert queues("sessions", split=True) == ["s"]
    assert queues("activities", split=True) == ["a"]
    with pytest.raises(ValueError, match="CHAT_ACTIVITY_TASK_QUEUE"):
        queues("activities", split=False)
