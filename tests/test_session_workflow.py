"""The session workflow on the time-skipping server, driven through the gateway's service.

The scripted provider answers `echo: <message>`, so every reply names the message it answers.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from api.service import SessionService
from common.ids import workflow_id
from tests.conftest import scripted_settings, terminate_sessions
from worker.build import build_worker
from workflows.messages import ChatMessage, SendMessage, SessionConfig, SessionStatus

OWNER = "alice"


@dataclass
class Harness:
    env: WorkflowEnvironment
    service: SessionService
    created: list[str] = field(default_factory=list)

    async def create(self, **config: object) -> str:
        session_id = uuid.uuid4().hex[:12]
        self.created.append(session_id)
        values: dict[str, object] = {"model": "scripted/echo", **config}
        await self.service.create(OWNER, session_id, SessionConfig(**values))
        return session_id

    async def say(
        self, session_id: str, content: str, message_id: str | None = None
    ) -> ChatMessage:
        msg = SendMessage(message_id=message_id or uuid.uuid4().hex, content=content)
        reply = await self.service.send_and_wait(OWNER, session_id, msg)
        assert reply is not None and reply.reply is not None
        return reply.reply

    async def history(self, session_id: str) -> list[ChatMessage]:
        page = await self.service.history(OWNER, session_id, after=0, limit=500)
        assert page.next is None
        return page.messages

    async def result(self, session_id: str) -> SessionStatus:
        handle = self.env.client.get_workflow_handle(
            workflow_id(OWNER, session_id), result_type=SessionStatus
        )
        status: SessionStatus = await handle.result()
        return status


@pytest.fixture
async def ts(ts_env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Harness]:
    settings = scripted_settings(task_queue)
    async with build_worker(ts_env.client, settings):
        harness = Harness(ts_env, SessionService(ts_env.client, settings))
        yield harness
        await terminate_sessions(ts_env, OWNER, harness.created)


@pytest.fixture
async def dev(dev_env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Harness]:
    """The same on the dev server, for tests that need no time skipping. With messages
    arriving across a continue-as-new, the time-skipping test server now and then leaves the
    new run's queries unanswered for good (and stalls time skipping for the tests after);
    the dev server, a real Temporal server, never did."""
    settings = scripted_settings(task_queue)
    async with build_worker(dev_env.client, settings):
        harness = Harness(dev_env, SessionService(dev_env.client, settings))
        yield harness
        await terminate_sessions(dev_env, OWNER, harness.created)


def assert_turns_in_order(history: list[ChatMessage]) -> None:
    """Each user message is followed by its own reply; turns are numbered 1, 2, 3..."""
    assert len(history) % 2 == 0
    for turn, (user, reply) in enumerate(zip(history[::2], history[1::2], strict=True), start=1):
        assert (user.role, reply.role) == ("user", "assistant")
        assert reply.reply_to == user.id
        assert user.turn == reply.turn == turn
        assert reply.content == "echo: " + user.content
    assert [m.seq for m in history] == list(range(1, len(history) + 1))


async def test_two_hour_inactivity_expiry_takes_milliseconds(ts: Harness) -> None:
    session_id = await ts.create()
    assert (await ts.say(session_id, "hello")).content == "echo: hello"
    started = time.monotonic()
    await ts.env.sleep(timedelta(hours=2, seconds=1))
    final = await ts.result(session_id)
    assert final.status == "expired"
    assert final.turns == 1
    assert time.monotonic() - started < 10


async def test_each_message_resets_the_inactivity_timer(ts: Harness) -> None:
    session_id = await ts.create(inactivity_timeout_seconds=100)
    await ts.env.sleep(60)
    await ts.say(session_id, "still here")
    await ts.env.sleep(60)  # 120 s after creation, 60 s after the message
    assert (await ts.service.status(OWNER, session_id)).status == "active"
    await ts.env.sleep(45)
    assert (await ts.result(session_id)).status == "expired"


async def test_resume_after_expiry_keeps_history_and_replies(ts: Harness) -> None:
    session_id = await ts.create(system_prompt="be brief", inactivity_timeout_seconds=60)
    first = await ts.say(session_id, "remember 42", message_id="m-first")
    await ts.env.sleep(61)
    assert (await ts.result(session_id)).status == "expired"

    second = await ts.say(session_id, "what number?")
    assert second.content == "echo: what number?"
    history = await ts.history(session_id)
    assert [m.content for m in history] == [
        "remember 42",
        "echo: remember 42",
        "what number?",
        "echo: what number?",
    ]
    assert_turns_in_order(history)
    status = await ts.service.status(OWNER, session_id)
    assert (status.status, status.runs, status.turns, status.system_prompt) == (
        "active",
        2,
        2,
        "be brief",
    )
    # A message id from the expired run is still known: same reply, no second copy.
    again = await ts.say(session_id, "remember 42", message_id="m-first")
    assert again == first
    assert len(await ts.history(session_id)) == 4


async def test_concurrent_sends_queue_and_never_interleave(ts: Harness) -> None:
    session_id = await ts.create()
    contents = ["[[delay=0.5]] slow one"] + [f"message {i}" for i in range(7)]
    replies = await asyncio.gather(*(ts.say(session_id, c) for c in contents))
    assert sorted(r.content for r in replies) == sorted(
        "echo: " + c.replace("[[delay=0.5]] ", "") for c in contents
    )
    history = await ts.history(session_id)
    assert len(history) == 2 * len(contents)
    for user, reply in zip(history[::2], history[1::2], strict=True):
        assert (reply.reply_to, reply.turn) == (user.id, user.turn)
    assert [m.turn for m in history[::2]] == list(range(1, len(contents) + 1))


async def test_resending_a_message_id_returns_the_same_reply_once(ts: Harness) -> None:
    session_id = await ts.create()
    first = await ts.say(session_id, "hi", message_id="dup-1")
    resent = await asyncio.gather(*(ts.say(session_id, "hi", message_id="dup-1") for _ in range(3)))
    await ts.service.send(OWNER, session_id, SendMessage(message_id="dup-1", content="hi"))
    assert all(r == first for r in resent)
    await ts.say(session_id, "next")
    assert [m.content for m in await ts.history(session_id)] == [
        "hi",
        "echo: hi",
        "next",
        "echo: next",
    ]


async def test_continue_as_new_loses_nothing_arriving_during_it(dev: Harness) -> None:
    session_id = await dev.create(max_turns_per_run=2)
    first_run = await dev.env.client.get_workflow_handle(workflow_id(OWNER, session_id)).describe()

    async def signal(i: int) -> None:
        await dev.service.send(
            OWNER, session_id, SendMessage(message_id=f"s{i}", content=f"sig {i}")
        )

    await asyncio.gather(
        *(dev.say(session_id, f"upd {i}", message_id=f"u{i}") for i in range(6)),
        *(signal(i) for i in range(5)),
    )
    # Signals have no reply to wait for: wait until they have all been answered.
    for _ in range(200):
        status = await dev.service.status(OWNER, session_id)
        if status.turns == 11 and status.status == "active":
            break
        await asyncio.sleep(0.05)
    history = await dev.history(session_id)
    assert len(history) == 22
    assert sorted(m.id for m in history if m.role == "user") == sorted(
        [f"u{i}" for i in range(6)] + [f"s{i}" for i in range(5)]
    )
    assert_turns_in_order(history)
    old = dev.env.client.get_workflow_handle(first_run.id, run_id=first_run.run_id)
    assert (await old.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW


async def test_a_failed_turn_is_recorded_and_the_session_goes_on(ts: Harness) -> None:
    session_id = await ts.create()
    failed = await ts.say(session_id, "[[fail=400]] break")
    assert failed.content == ""
    assert failed.error is not None and "scripted failure" in failed.error
    assert (await ts.say(session_id, "fine now")).content == "echo: fine now"
    assert (await ts.service.status(OWNER, session_id)).turns == 2


async def test_a_retryable_failure_is_retried_within_the_turn(ts: Harness) -> None:
    session_id = await ts.create()
    reply = await ts.say(session_id, "[[fail_once=503]] flaky")
    assert (reply.content, reply.error) == ("echo: flaky", None)


async def test_invalid_update_is_refused_before_history(ts: Harness) -> None:
    session_id = await ts.create()
    await ts.say(session_id, "ok")
    handle = ts.env.client.get_workflow_handle(workflow_id(OWNER, session_id))
    before = await accepted_updates(handle)
    for bad in (
        SendMessage(message_id="x1", content="   "),
        SendMessage(message_id="bad id", content="x"),
    ):
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await handle.execute_update("send_message_and_wait", bad)
        assert isinstance(info.value.cause, ApplicationError)
        assert info.value.cause.type == "InvalidMessage"
    # Rejected in the validator: neither attempt was accepted into history.
    assert await accepted_updates(handle) == before
    assert len(await ts.history(session_id)) == 2


async def accepted_updates(handle: WorkflowHandle[Any, Any]) -> int:
    accepted = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    return sum(e.event_type == accepted for e in (await handle.fetch_history()).events)


async def test_end_then_resume(ts: Harness) -> None:
    session_id = await ts.create()
    await ts.say(session_id, "one")
    ended = await ts.service.end(OWNER, session_id)
    assert ended.status == "ended"
    assert (await ts.result(session_id)).status == "ended"
    await ts.say(session_id, "two")
    status = await ts.service.status(OWNER, session_id)
    assert (status.status, status.turns, status.runs) == ("active", 2, 2)


async def test_end_when_every_turn_continues_as_new(ts: Harness) -> None:
    session_id = await ts.create(max_turns_per_run=1)
    await ts.say(session_id, "one")
    await ts.say(session_id, "two")
    ended = await asyncio.wait_for(ts.service.end(OWNER, session_id), timeout=10)
    assert ended.status == "ended"
    assert (await ts.result(session_id)).turns == 2
