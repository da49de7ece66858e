"""Tool turns on the time-skipping server: the scripted provider asks for tools by script.

A message carrying `<<tools:[[step 1 calls], [step 2 calls], ...]>>` makes the provider ask
for those calls, one step per model call, then answer `echo: <text> [tools: <results>]`.
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.providers.scripted import tool_script as script
from api.service import SessionService
from common.ids import workflow_id
from tests import tool_fixtures
from tests.conftest import scripted_settings, terminate_sessions
from tools.builtin import builtin_registry
from tools.registry import ToolRegistry, tools_in
from worker.build import build_worker
from workflows.messages import ChatMessage, SendMessage, SessionConfig, SessionStatus, ToolDecision

OWNER = "alice"
CAP = 2_000


def tool_registry() -> ToolRegistry:
    registry = builtin_registry(max_output_chars=CAP)
    registry.register(*tools_in(tool_fixtures))
    return registry


@dataclass
class Harness:
    env: WorkflowEnvironment
    service: SessionService
    created: list[str] = field(default_factory=list)

    async def create(self, tools: list[str], **config: Any) -> str:
        session_id = uuid.uuid4().hex[:12]
        self.created.append(session_id)
        cfg = SessionConfig(model="scripted/echo", tools=tools, **config)
        await self.service.create(OWNER, session_id, cfg)
        return session_id

    async def say(self, session_id: str, content: str) -> ChatMessage:
        msg = SendMessage(message_id=uuid.uuid4().hex, content=content)
        reply = await self.service.send_and_wait(OWNER, session_id, msg)
        assert reply is not None and reply.reply is not None
        return reply.reply

    async def send(self, session_id: str, content: str) -> str:
        message_id = uuid.uuid4().hex
        await self.service.send(
            OWNER, session_id, SendMessage(message_id=message_id, content=content)
        )
        return message_id

    async def history(self, session_id: str) -> list[ChatMessage]:
        page = await self.service.history(OWNER, session_id, after=0, limit=500)
        return page.messages

    async def status_when(
        self, session_id: str, ready: Callable[[SessionStatus], bool]
    ) -> SessionStatus:
        for _ in range(200):
            status = await self.service.status(OWNER, session_id)
            if ready(status):
                return status
            await asyncio.sleep(0.05)
        raise AssertionError(f"status never matched: {status}")

    async def reply_to(self, session_id: str, message_id: str) -> ChatMessage:
        for _ in range(200):
            lookup = await self.service.reply(OWNER, session_id, message_id)
            if lookup.reply is not None:
                return lookup.reply
            await asyncio.sleep(0.05)
        raise AssertionError("no reply")


@pytest.fixture
async def ts(ts_env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Harness]:
    settings = scripted_settings(task_queue)
    tool_fixtures.SENT_NOTES.clear()
    async with build_worker(ts_env.client, settings, tools=tool_registry()):
        harness = Harness(ts_env, SessionService(ts_env.client, settings))
        yield harness
        await terminate_sessions(ts_env, OWNER, harness.created)


def turn_messages(history: list[ChatMessage], reply: ChatMessage) -> list[ChatMessage]:
    return [m for m in history if m.turn == reply.turn]


async def test_seed_003_date_question_answered_through_the_date_tool(ts: Harness) -> None:
    session_id = await ts.create(["resolve_date"])
    question = "What day of the week is July 4th, 2025?"
    call = ("resolve_date", {"expression": "July 4th, 2025"})
    reply = await ts.say(session_id, question + " " + script([call]))

    assert reply.error is None
    assert reply.content.startswith("echo: " + question)
    assert '"weekday":"Friday"' in reply.content
    user, asked, result, final = await ts.history(session_id)
    assert (user.role, asked.role, result.role, final.role) == (
        "user",
        "assistant",
        "tool",
        "assistant",
    )
    assert [c.name for c in asked.tool_calls] == ["resolve_date"]
    assert json.loads(asked.tool_calls[0].arguments) == {"expression": "July 4th, 2025"}
    assert result.tool_call_id == asked.tool_calls[0].id and result.tool_name == "resolve_date"
    assert not result.is_error and '"date":"2025-07-04"' in result.content
    assert final.id == reply.id and final.reply_to == user.id
    # Both model calls count: the scripted step asking for one call, then the answer's words.
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 1 + len(reply.content.split())


async def test_parallel_calls_run_at_the_same_time(ts: Harness) -> None:
    # Each rendezvous call returns only once both have started: run one after the other,
    # the first would give up after 5 s and report that it was alone.
    session_id = await ts.create(["rendezvous"])
    group = uuid.uuid4().hex
    meet = ("rendezvous", {"group": group, "size": 2})
    reply = await ts.say(session_id, "meet " + script([meet, meet]))

    assert reply.content == f"echo: meet [tools: met {group} | met {group}]"
    history = await ts.history(session_id)
    asked = history[1]
    results = history[2:4]
    assert [r.tool_call_id for r in results] == [c.id for c in asked.tool_calls]
    assert len({c.id for c in asked.tool_calls}) == 2


async def test_a_failing_tool_is_told_to_the_model(ts: Harness) -> None:
    session_id = await ts.create(["always_fails", "calculate"])
    reply = await ts.say(session_id, "try " + script([("always_fails", {})]))

    assert reply.error is None
    assert reply.content == (
        "echo: try [tools: error: Tool 'always_fails' failed: the backend is down]"
    )
    tool_message = (await ts.history(session_id))[2]
    assert tool_message.is_error
    # The session goes on.
    again = await ts.say(session_id, "sum " + script([("calculate", {"expression": "6*7"})]))
    assert again.content == "echo: sum [tools: 42]"


async def test_invalid_arguments_and_unavailable_tools_are_error_results(ts: Harness) -> None:
    session_id = await ts.create(["calculate"])
    calls = [
        ("calculate", "{not json"),
        ("calculate", {"formula": "1+1"}),
        ("always_fails", {}),  # registered on the worker, but not one of this session's tools
        ("no_such_tool", {}),
    ]
    reply = await ts.say(session_id, "bad " + script(calls))

    results = [m for m in await ts.history(session_id) if m.role == "tool"]
    assert [r.is_error for r in results] == [True, True, True, True]
    assert "not valid JSON" in results[0].content
    assert "field 'expression'" in results[1].content
    assert "'always_fails' is not available in this session" in results[2].content
    assert "'no_such_tool' is not available" in results[3].content
    assert reply.error is None and reply.content.count("error: ") == 4


async def test_the_step_bound_ends_the_turn_with_a_clear_message(ts: Harness) -> None:
    session_id = await ts.create(["calculate"], max_tool_steps=3)
    add = ("calculate", {"expression": "1+1"})
    reply = await ts.say(session_id, "loop " + script([add], [add], [add], [add], [add]))

    assert reply.error is not None and "Stopped after 3 model calls" in reply.error
    history = await ts.history(session_id)
    assert sum(1 for m in history if m.role == "tool") == 2  # steps 1 and 2 ran their tools
    # The next turn is an ordinary one.
    assert (await ts.say(session_id, "hello")).content == "echo: hello"


async def test_tool_output_is_capped_before_it_enters_history(ts: Harness) -> None:
    session_id = await ts.create(["big_output"])
    await ts.say(session_id, "big " + script([("big_output", {"chars": 50_000})]))

    result = (await ts.history(session_id))[2]
    assert result.truncated and len(result.content) <= CAP
    assert "[truncated" in result.content


async def test_approval_granted_runs_the_call(ts: Harness) -> None:
    session_id = await ts.create(["send_note"])
    message_id = await ts.send(session_id, "note " + script([("send_note", {"text": "ship it"})]))

    status = await ts.status_when(session_id, lambda s: s.status == "awaiting_approval")
    (pending,) = status.pending_approvals
    assert pending.name == "send_note" and json.loads(pending.arguments) == {"text": "ship it"}
    assert pending.message_id == message_id
    asked = (await ts.history(session_id))[1]
    assert asked.tool_calls[0].approval == "pending"
    assert tool_fixtures.SENT_NOTES == []
    lookup = await ts.service.reply(OWNER, session_id, message_id)
    assert lookup.state == "awaiting_approval"

    decided = await ts.service.decide_tool_call(
        OWNER, session_id, ToolDecision(call_id=pending.call_id, approve=True)
    )
    assert decided.approval == "approved"
    reply = await ts.reply_to(session_id, message_id)
    assert reply.content == "echo: note [tools: sent: ship it]"
    key = f"{OWNER}:{session_id}:1:{pending.call_id}"
    assert [("ship it", key)] == tool_fixtures.SENT_NOTES
    status = await ts.service.status(OWNER, session_id)
    assert status.status == "active" and status.pending_approvals == []
    assert (await ts.history(session_id))[1].tool_calls[0].approval == "approved"


async def test_approval_denied_is_told_to_the_model(ts: Harness) -> None:
    session_id = await ts.create(["send_note", "calculate"])
    calls = [("send_note", {"text": "ship it"}), ("calculate", {"expression": "2+2"})]
    message_id = await ts.send(session_id, "note " + script(calls))
    status = await ts.status_when(session_id, lambda s: bool(s.pending_approvals))
    call_id = status.pending_approvals[0].call_id

    await ts.service.decide_tool_call(
        OWNER, session_id, ToolDecision(call_id=call_id, approve=False, reason="not today")
    )
    reply = await ts.reply_to(session_id, message_id)
    assert reply.content == (
        "echo: note [tools: error: The user denied the call to 'send_note'; it did not run. "
        "Reason: not today | 4]"
    )
    assert tool_fixtures.SENT_NOTES == []


async def test_decisions_are_validated(ts: Harness) -> None:
    session_id = await ts.create(["send_note"])
    message_id = await ts.send(session_id, "note " + script([("send_note", {"text": "x"})]))
    status = await ts.status_when(session_id, lambda s: bool(s.pending_approvals))
    call_id = status.pending_approvals[0].call_id

    async def decide(call: str, approve: bool) -> str | None:
        try:
            await ts.service.decide_tool_call(
                OWNER, session_id, ToolDecision(call_id=call, approve=approve)
            )
        except WorkflowUpdateFailedError as err:
            assert isinstance(err.cause, ApplicationError)
            return err.cause.type
        return None

    assert await decide("call-unknown", True) == "UnknownToolCall"
    assert await decide(call_id, True) is None
    assert await decide(call_id, True) is None  # the same answer again is accepted
    assert await decide(call_id, False) == "ToolCallDecided"
    await ts.reply_to(session_id, message_id)


async def test_unanswered_approval_is_denied_at_the_deadline_and_the_session_waits(
    ts: Harness,
) -> None:
    session_id = await ts.create(
        ["send_note"], approval_timeout_seconds=3600, inactivity_timeout_seconds=60
    )
    message_id = await ts.send(session_id, "note " + script([("send_note", {"text": "x"})]))
    await ts.status_when(session_id, lambda s: s.status == "awaiting_approval")

    await ts.env.sleep(1800)  # far past the inactivity timeout: still waiting, not expired
    status = await ts.service.status(OWNER, session_id)
    assert status.status == "awaiting_approval" and len(status.pending_approvals) == 1

    await ts.env.sleep(1801)
    reply = await ts.reply_to(session_id, message_id)
    assert "was not approved in time and did not run" in reply.content
    assert (await ts.history(session_id))[1].tool_calls[0].approval == "timed_out"
    assert tool_fixtures.SENT_NOTES == []
    status = await ts.service.status(OWNER, session_id)
    assert status.status == "active" and status.expires_at is not None


async def test_tools_can_change_during_the_session(ts: Harness) -> None:
    session_id = await ts.create(["calculate"])
    status = await ts.service.set_tools(OWNER, session_id, ["resolve_date"])
    assert status.tools == ["resolve_date"]
    reply = await ts.say(session_id, "sum " + script([("calculate", {"expression": "1+2"})]))
    assert "'calculate' is not available in this session" in reply.content


async def test_history_pages_never_split_a_call_from_its_results(ts: Harness) -> None:
    session_id = await ts.create(["calculate"])
    calls = [("calculate", {"expression": f"{i}+1"}) for i in range(3)]
    await ts.say(session_id, "sums " + script(calls))

    first = await ts.service.history(OWNER, session_id, after=0, limit=2)  # would end at the call
    assert [m.role for m in first.messages] == ["user", "assistant", "tool", "tool", "tool"]
    assert first.next == 5
    rest = await ts.service.history(OWNER, session_id, after=first.next, limit=10)
    assert [m.role for m in rest.messages] == ["assistant"] and rest.next is None


async def test_tool_turns_survive_continue_as_new(ts: Harness) -> None:
    session_id = await ts.create(["calculate"], max_turns_per_run=1)
    handle = ts.env.client.get_workflow_handle(workflow_id(OWNER, session_id))
    first_run = (await handle.describe()).run_id
    await ts.say(session_id, "a " + script([("calculate", {"expression": "1+1"})]))
    reply = await ts.say(session_id, "b " + script([("calculate", {"expression": "2+2"})]))

    assert reply.content == "echo: b [tools: 4]"
    assert (await handle.describe()).run_id != first_run  # continued as new after turn 1
    assert (await ts.service.status(OWNER, session_id)).tools == ["calculate"]
    history = await ts.history(session_id)
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant"] * 2


async def test_each_tool_activity_has_a_summary_for_the_ui(ts: Harness) -> None:
    session_id = await ts.create(["calculate"])
    await ts.say(session_id, "sum " + script([("calculate", {"expression": "6 *  7"})]))

    handle = ts.env.client.get_workflow_handle(workflow_id(OWNER, session_id))
    converter = ts.env.client.data_converter.payload_converter
    summaries = [
        (
            e.activity_task_scheduled_event_attributes.activity_type.name,
            converter.from_payload(e.user_metadata.summary, str),
        )
        for e in (await handle.fetch_history()).events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert [name for name, _ in summaries] == ["generate_reply", "run_tool", "generate_reply"]
    assert summaries[1][1] == 'calculate({"expression": "6 * 7"}) · turn 1'
    assert "step 2" in summaries[2][1]


async def test_ending_the_session_denies_what_waits_for_approval(ts: Harness) -> None:
    session_id = await ts.create(["send_note"])
    message_id = await ts.send(session_id, "note " + script([("send_note", {"text": "x"})]))
    await ts.status_when(session_id, lambda s: s.status == "awaiting_approval")

    ended = await ts.service.end(OWNER, session_id)
    assert ended.status == "ended" and ended.pending_approvals == []
    reply = await ts.reply_to(session_id, message_id)
    assert "denied" in reply.content and "ended the session" in reply.content
    assert tool_fixtures.SENT_NOTES == []
