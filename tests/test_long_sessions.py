"""Long conversations on the time-skipping server: bounded runs, paging across them, resends
of long-answered messages, compaction (issue 5).

The scripted provider answers `echo: <message>`, so every reply names the message it answers.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from api.errors import ApiError
from common.ids import workflow_id
from common.model_windows import ModelWindow
from tests.conftest import scripted_settings, terminate_sessions, time_skipping_env
from tests.payloads import payloads_in
from tests.test_session_workflow import OWNER, Harness, assert_turns_in_order
from worker.build import build_worker
from workflows.messages import (
    CarriedState,
    ChatMessage,
    ContextMessage,
    ImportBatch,
    ImportDone,
    LLMContextRequest,
    SendMessage,
    SessionConfig,
    SessionStatus,
)

SMALL = "scripted/small"
"""A scripted model with a small window: 1,000 tokens (words, to the scripted model), 100 of
them kept for the reply, so a conversation outgrows its prompt within a few turns."""


@pytest.fixture(scope="module")
async def long_env() -> AsyncIterator[WorkflowEnvironment]:
    """Its own server: cancelled slow calls and long runs here must not stall time skipping
    for the modules after it."""
    async for env in time_skipping_env():
        yield env


@pytest.fixture
async def dev(dev_env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Harness]:
    """On the dev server, for tests that need no time skipping. (With many signals queued
    across a continue-as-new, the time-skipping server sometimes leaves queries unanswered
    for good; the dev server never did.)"""
    settings = scripted_settings(
        task_queue, model_windows={SMALL: ModelWindow(context_tokens=1_000, output_tokens=100)}
    )
    async with build_worker(dev_env.client, settings):
        from api.service import SessionService

        harness = Harness(dev_env, SessionService(dev_env.client, settings))
        yield harness
        await terminate_sessions(dev_env, OWNER, harness.created)


@pytest.fixture
async def ts(long_env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Harness]:
    ts_env = long_env
    settings = scripted_settings(task_queue)
    async with build_worker(ts_env.client, settings):
        from api.service import SessionService

        harness = Harness(ts_env, SessionService(ts_env.client, settings))
        yield harness
        await terminate_sessions(ts_env, OWNER, harness.created)


async def read_all(ts: Harness, session_id: str, limit: int) -> list[ChatMessage]:
    """The whole conversation through the gateway's paging, as a client reads it."""
    messages: list[ChatMessage] = []
    after: int | None = 0
    while after is not None:
        page = await ts.service.history(OWNER, session_id, after, limit)
        messages.extend(page.messages)
        after = page.next
    return messages


async def test_runs_carry_a_bounded_tail_and_paging_reads_every_run(ts: Harness) -> None:
    # 400-character messages, at most 1,000 characters carried: each run hands on ~2 messages.
    session_id = await ts.create(max_turns_per_run=2, carry_max_chars=1_000, compaction=False)
    texts = [f"{i:03d} " + "x" * 396 for i in range(7)]
    for i, text in enumerate(texts):
        await ts.say(session_id, text, message_id=f"m{i}")
    history = await read_all(ts, session_id, limit=3)
    assert [m.content for m in history if m.role == "user"] == texts
    assert_turns_in_order(history)
    status = await ts.service.status(OWNER, session_id)
    assert (status.messages, status.turns) == (14, 7)
    assert status.runs == 1  # `runs` counts resumes; continue-as-new keeps it
    # The current run holds only a tail; the start of the conversation is in closed runs.
    handle = ts.env.client.get_workflow_handle(workflow_id(OWNER, session_id))
    carried = await handle.query("snapshot", result_type=CarriedState)
    assert carried.message_count == 14
    assert 0 < len(carried.messages) <= 4 and carried.messages[-1].seq == 14
    oldest = carried.archive[0]
    assert (oldest.first_seq, oldest.last_seq) == (1, 4)
    assert carried.archive[-1].last_seq >= carried.messages[0].seq - 1
    # Every page size gives the same conversation.
    for limit in (1, 2, 5, 500):
        assert await read_all(ts, session_id, limit) == history


async def test_a_resend_answered_runs_ago_gets_its_reply(ts: Harness) -> None:
    session_id = await ts.create(max_turns_per_run=1, carry_max_chars=1_000, compaction=False)
    first = await ts.say(session_id, "first " + "y" * 600, message_id="first")
    for i in range(4):
        await ts.say(session_id, f"later {i} " + "z" * 600)
    again = await ts.say(session_id, "first " + "y" * 600, message_id="first")
    assert again == first
    lookup = await ts.service.reply(OWNER, session_id, "first")
    assert lookup.state == "done" and lookup.reply == first
    assert (await ts.service.status(OWNER, session_id)).turns == 5


async def test_an_expired_long_session_resumes_and_pages_end_to_end(ts: Harness) -> None:
    session_id = await ts.create(
        max_turns_per_run=2, carry_max_chars=1_000, compaction=False, inactivity_timeout_seconds=60
    )
    for i in range(5):
        await ts.say(session_id, f"{i} " + "w" * 500, message_id=f"a{i}")
    await ts.env.sleep(timedelta(seconds=120))
    assert (await ts.result(session_id)).status == "expired"
    await ts.say(session_id, "back again", message_id="back")
    history = await read_all(ts, session_id, limit=4)
    assert [m.id for m in history if m.role == "user"] == [f"a{i}" for i in range(5)] + ["back"]
    assert_turns_in_order(history)


async def test_signals_during_continue_as_new_with_a_tail_are_all_answered(dev: Harness) -> None:
    session_id = await dev.create(max_turns_per_run=1, carry_max_chars=1_000, compaction=False)
    for i in range(6):
        msg = SendMessage(message_id=f"s{i}", content=f"{i} " + "v" * 450)
        await dev.service.send(OWNER, session_id, msg)
    await dev.say(session_id, "last", message_id=f"u{uuid.uuid4().hex[:6]}")
    history = await read_all(dev, session_id, limit=50)
    assert [m.id for m in history if m.role == "user"][:6] == [f"s{i}" for i in range(6)]
    assert_turns_in_order(history)


async def test_an_import_lands_across_runs_and_then_takes_messages(ts: Harness) -> None:
    source = await ts.create(max_turns_per_run=3, carry_max_chars=1_000, compaction=False)
    for i in range(5):
        await ts.say(source, f"{i} " + "q" * 300, message_id=f"q{i}")
    exported = await read_all(ts, source, limit=500)
    copy = uuid.uuid4().hex[:12]
    ts.created.append(copy)
    config = SessionConfig(model="scripted/echo", carry_max_chars=1_000, compaction=False)
    await ts.service.create(OWNER, copy, config, importing=True)
    handle = ts.env.client.get_workflow_handle(workflow_id(OWNER, copy))
    for start in range(0, len(exported), 3):
        batch = ImportBatch(messages=exported[start : start + 3])
        await handle.execute_update("import_messages", batch, result_type=SessionStatus)
        await handle.execute_update("import_messages", batch, result_type=SessionStatus)  # resend
    done = await handle.execute_update("finish_import", ImportDone(), result_type=SessionStatus)
    assert (done.messages, done.turns) == (10, 5)
    await ts.say(copy, "after import", message_id="after")
    history = await read_all(ts, copy, limit=4)
    assert history[:10] == exported
    assert_turns_in_order(history)


PAYLOAD_WARNING_BYTES = 512 * 1024


async def run_histories(env: WorkflowEnvironment, wf_id: str, first_run: str) -> list[Any]:
    """Every run of a session, oldest first, by following continue-as-new."""
    histories = []
    run_id: str | None = first_run
    while run_id:
        history = await env.client.get_workflow_handle(wf_id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1]
        attrs = last.workflow_execution_continued_as_new_event_attributes
        run_id = (
            attrs.new_execution_run_id
            if last.HasField("workflow_execution_continued_as_new_event_attributes")
            else None
        )
    return histories


@pytest.mark.slow
async def test_a_thousand_turns_of_2kb_messages(ts: Harness) -> None:
    """The issue's long session: 1,000 turns, 2 KB messages, default run and carry limits."""
    session_id = await ts.create()
    wf_id = workflow_id(OWNER, session_id)
    first_run = (await ts.env.client.get_workflow_handle(wf_id).describe()).run_id
    texts = [f"{i:04d} " + ("lorem ipsum " * 171)[:2043] for i in range(1000)]
    for i, text in enumerate(texts):
        await ts.say(session_id, text, message_id=f"t{i}")
    status = await ts.service.status(OWNER, session_id)
    assert (status.turns, status.messages) == (1000, 2000)

    histories = await run_histories(ts.env, wf_id, first_run)
    assert len(histories) >= 4  # 250 turns per run by default
    for history in histories:
        # Far below the server's limits: no history warning (10,240 events / 10 MB) and no
        # continue-as-new suggestion pressure (4,096 events / 4 MB), no payload warning.
        assert len(history.events) < 4_096
        assert sum(e.ByteSize() for e in history.events) < 4 * 1024 * 1024
        assert max(e.ByteSize() for e in history.events) < PAYLOAD_WARNING_BYTES

    everything = await read_all(ts, session_id, limit=500)
    assert [m.content for m in everything if m.role == "user"] == texts
    assert_turns_in_order(everything)

    # Export and re-import: the copy reads the same, end to end.
    copy = uuid.uuid4().hex[:12]
    ts.created.append(copy)
    await ts.service.create(OWNER, copy, SessionConfig(model="scripted/echo"), importing=True)
    handle = ts.env.client.get_workflow_handle(workflow_id(OWNER, copy))
    for start in range(0, len(everything), 100):
        batch = ImportBatch(messages=everything[start : start + 100])
        await handle.execute_update("import_messages", batch, result_type=SessionStatus)
    await handle.execute_update(
        "finish_import", ImportDone(usage=status.usage), result_type=SessionStatus
    )
    assert await read_all(ts, copy, limit=500) == everything


async def test_busy_policy_reject_refuses_a_message_during_a_turn(ts: Harness) -> None:
    session_id = await ts.create(busy_policy="reject")
    await ts.service.send(
        OWNER, session_id, SendMessage(message_id="slow", content="[[delay=3]] a")
    )
    await wait_for_state(ts, session_id, "working")
    with pytest.raises(ApiError) as refused:
        await ts.service.send(OWNER, session_id, SendMessage(message_id="b", content="b"))
    assert refused.value.status == 409
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await ts.say(session_id, "c", message_id="c")
    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.type == "TurnInProgress"
    # A resend of the running message is not a new one.
    await ts.service.send(
        OWNER, session_id, SendMessage(message_id="slow", content="[[delay=3]] a")
    )
    await wait_for_state(ts, session_id, "active")
    assert (await ts.say(session_id, "after", message_id="after")).content == "echo: after"
    history = await read_all(ts, session_id, limit=50)
    assert [m.id for m in history if m.role == "user"] == ["slow", "after"]


async def test_busy_policy_interrupt_cancels_the_running_generation(ts: Harness) -> None:
    session_id = await ts.create(busy_policy="interrupt")
    await ts.service.send(
        OWNER, session_id, SendMessage(message_id="long", content="[[delay=30]] a")
    )
    await wait_for_state(ts, session_id, "working")
    started = time.monotonic()
    answer = await ts.say(session_id, "stop that", message_id="stop")
    assert answer.content == "echo: stop that"
    assert time.monotonic() - started < 15  # the 30 s generation was cancelled, not awaited
    history = await read_all(ts, session_id, limit=50)
    first = history[1]
    assert first.reply_to == "long" and first.error is not None
    assert "Interrupted by message 'stop'" in first.error
    assert [(m.id, m.turn) for m in history[2:]] == [("stop", 2), ("stop.reply", 2)]


async def wait_for_state(ts: Harness, session_id: str, state: str) -> None:
    for _ in range(400):
        if (await ts.service.status(OWNER, session_id)).status == state:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"the session never became {state}")


def words(n: int, tag: str) -> str:
    return f"{tag} " + " ".join(f"w{i}" for i in range(n - 1))


async def test_compaction_under_concurrent_sends_keeps_every_message(dev: Harness) -> None:
    """Messages arrive while turns and compactions run: each is answered once, in order; a
    running summary takes the place of the oldest ones in prompts, and every original message
    stays readable."""
    session_id = await dev.create(model=SMALL, max_turns_per_run=12)
    texts = [words(40, f"m{i:02d}") for i in range(24)]

    async def send(first: int, last: int) -> None:
        for i in range(first, last):
            await dev.service.send(
                OWNER, session_id, SendMessage(message_id=f"m{i}", content=texts[i])
            )
            await asyncio.sleep(0.02)

    await asyncio.gather(send(0, 12), send(12, 24))
    status = await wait_for_turns(dev, session_id, 24)
    history = await read_all(dev, session_id, limit=10)
    sent = [m.id for m in history if m.role == "user"]
    # Each sender's messages in the order it sent them (the two senders interleave).
    assert [i for i in sent if int(i[1:]) < 12] == [f"m{i}" for i in range(12)]
    assert [i for i in sent if int(i[1:]) >= 12] == [f"m{i}" for i in range(12, 24)]
    assert sorted(m.content for m in history if m.role == "user") == sorted(texts)
    assert all(m.error is None for m in history)
    assert_turns_in_order(history)

    assert status.summary is not None and status.summary.upto_seq > 0
    assert status.summary.text.startswith("echo: ")  # what the scripted model "summarised"
    wf_id = workflow_id(OWNER, session_id)
    events = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for run in await run_histories(dev.env, wf_id, await first_run_id(dev, wf_id))
        for e in run.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    # Every few turns, not every turn: a call measured against a summary being replaced
    # asks for nothing.
    assert 1 <= events.count("summarize_history") <= 6, events.count("summarize_history")

    # The next prompt: system summary, then only messages after what the summary covers.
    handle = dev.env.client.get_workflow_handle(wf_id)
    prompt: list[ContextMessage] = await handle.query(
        "llm_context",
        LLMContextRequest(upto_seq=status.messages, max_chars=100_000),
        result_type=list[ContextMessage],
    )
    assert prompt[0].role == "system" and "Summary of the earlier conversation" in prompt[0].content
    seqs = [m.seq for m in prompt[1:]]
    assert seqs and all(seq is not None and seq > status.summary.upto_seq for seq in seqs)


async def test_a_message_larger_than_the_window_fails_its_turn_and_the_session_goes_on(
    dev: Harness,
) -> None:
    session_id = await dev.create(model=SMALL)
    assert (await dev.say(session_id, "hello", message_id="a")).content == "echo: hello"
    reply = await dev.say(session_id, words(1_000, "huge"), message_id="huge")
    assert reply.error is not None and reply.content == ""
    assert "The newest message is about 1004 tokens, but scripted/small has room for 900" in (
        reply.error
    )
    assert (await dev.say(session_id, "still here", message_id="b")).content == "echo: still here"
    history = await read_all(dev, session_id, limit=50)
    assert [m.id for m in history if m.role == "user"] == ["a", "huge", "b"]


async def first_run_id(ts: Harness, wf_id: str) -> str:
    """The session's first run: the one whose history starts without a continued-from run."""
    handle = ts.env.client.get_workflow_handle(wf_id)
    description = await handle.describe()
    run_id = description.run_id
    while True:
        history = await ts.env.client.get_workflow_handle(wf_id, run_id=run_id).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        if not started.continued_execution_run_id:
            return run_id
        run_id = started.continued_execution_run_id


async def wait_for_turns(ts: Harness, session_id: str, turns: int) -> SessionStatus:
    for _ in range(1200):
        status = await ts.service.status(OWNER, session_id)
        if status.turns >= turns and status.status == "active":
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"the session never answered {turns} turns")


async def test_long_texts_are_written_to_history_once(ts: Harness) -> None:
    """A long message is in the send only, its reply in the model call's result only: the
    activity and the gateway read them by query."""
    session_id = await ts.create()
    text = "long " + "x" * 2_000
    reply = await ts.say(session_id, text, message_id="long")
    assert reply.content == f"echo: {text}"
    short = await ts.say(session_id, "short one", message_id="short")
    assert short.content == "echo: short one"
    history = await ts.env.client.get_workflow_handle(
        workflow_id(OWNER, session_id)
    ).fetch_history()
    raw = b"".join(p.data for e in history.events for p in payloads_in(e)).decode()
    assert raw.count("x" * 2_000) == 2  # the message once, and once inside its reply
    assert raw.count("echo: short one") == 2  # short texts stay inline: result and update
    assert raw.count("short one") == 4  # and the short message in the send and the call
