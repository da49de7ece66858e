"""Property-based tests (hypothesis) of the session workflow's message handling.

Any sequence of sends (by update, waiting for the reply, or by signal), resends of earlier
message ids (same or different content, either way), ends and inactivity expiries, on the
time-skipping server, leaves the session's history with each message exactly once, in the
order it was first accepted, each followed by exactly one reply; a resend never adds a copy
and, by update, gets the first reply again. Sessions continue as new every few turns, so runs
carry history across continue-as-new as well as across expiry and end.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.testing import WorkflowEnvironment

from api.service import SessionService
from common.ids import workflow_id
from tests.conftest import scripted_settings, terminate_sessions
from worker.build import build_worker
from workflows.messages import ChatMessage, Reply, SendMessage, SessionConfig, SessionStatus

OWNER = "alice"
TIMEOUT_SECONDS = 60
TURNS_PER_RUN = 3  # continue as new often, so sequences cross runs
SETTLE_SECONDS = 20.0


@dataclass(frozen=True)
class Send:
    content: str
    by_signal: bool


@dataclass(frozen=True)
class Resend:
    which: int  # an earlier message, by position (modulo how many there are)
    content: str | None  # None: the same content as the first time
    by_signal: bool


@dataclass(frozen=True)
class End:
    pass


@dataclass(frozen=True)
class Expire:
    pass


Op = Send | Resend | End | Expire

# The scripted provider replies `echo: <content, stripped>`; `[[` and `<<` would be directives.
contents = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="[<"), min_size=1, max_size=12
).filter(lambda text: bool(text.strip()))
operations = st.lists(
    st.one_of(
        st.builds(Send, contents, st.booleans()),
        st.builds(Resend, st.integers(0, 7), st.none() | contents, st.booleans()),
        st.builds(End),
        st.builds(Expire),
    ),
    min_size=1,
    max_size=8,
)


@dataclass
class Session:
    """A session under test, and what its history must come to."""

    env: WorkflowEnvironment
    service: SessionService
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    accepted: list[str] = field(default_factory=list)  # message ids, in first-accepted order
    content: dict[str, str] = field(default_factory=dict)  # the first content of each
    replies: dict[str, ChatMessage] = field(default_factory=dict)  # replies seen so far
    open: bool = True  # whether a run is (or may still be) going

    async def apply(self, op: Op) -> None:
        if isinstance(op, Send):
            message_id = uuid.uuid4().hex[:10]
            self.accepted.append(message_id)
            self.content[message_id] = op.content
            await self.send(message_id, op.content, op.by_signal)
        elif isinstance(op, Resend):
            if not self.accepted:
                return
            message_id = self.accepted[op.which % len(self.accepted)]
            content = self.content[message_id] if op.content is None else op.content
            await self.send(message_id, content, op.by_signal)
        elif isinstance(op, End):
            ended = await self.service.end(OWNER, self.session_id)
            # Ending answers everything queued first; a closed session stays as it closed.
            assert ended.status == "ended" if self.open else ended.status in ("ended", "expired")
            assert ended.queued == 0
            self.open = False
        else:
            await self.env.sleep(timedelta(seconds=TIMEOUT_SECONDS + 1))
            if self.open:
                # Waiting for the result lets time run on until the run is over.
                handle = self.env.client.get_workflow_handle(
                    workflow_id(OWNER, self.session_id), result_type=SessionStatus
                )
                final: SessionStatus = await handle.result()
                assert (final.status, final.queued) == ("expired", 0)
                self.open = False

    async def send(self, message_id: str, content: str, by_signal: bool) -> None:
        msg = SendMessage(message_id=message_id, content=content)
        self.open = True  # a message (even a resent one) resumes a closed session
        if by_signal:
            await self.service.send(OWNER, self.session_id, msg)
            return
        reply: Reply | None = await self.service.send_and_wait(OWNER, self.session_id, msg)
        assert reply is not None and reply.reply is not None
        assert reply.message_id == message_id
        first = self.replies.setdefault(message_id, reply.reply)
        assert reply.reply == first, "a resend got another reply than the first"
        self.check_reply(message_id, reply.reply)

    def check_reply(self, message_id: str, reply: ChatMessage) -> None:
        assert (reply.role, reply.reply_to, reply.error) == ("assistant", message_id, None)
        assert reply.content == "echo: " + self.content[message_id].strip()

    async def settle(self) -> None:
        """Wait for the replies to messages sent by signal."""
        deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
        for message_id in self.accepted:
            while message_id not in self.replies:
                lookup = await self.service.reply(OWNER, self.session_id, message_id)
                assert lookup.state != "unknown", f"{message_id} was lost"
                if lookup.state == "done":
                    assert lookup.reply is not None
                    self.replies[message_id] = lookup.reply
                    self.check_reply(message_id, lookup.reply)
                    break
                assert asyncio.get_running_loop().time() < deadline, f"{message_id} unanswered"
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Terminate the session once none of its activities runs: on the time-skipping
        server, a run terminated mid-activity stops time skipping for every later test."""
        handle = self.env.client.get_workflow_handle(workflow_id(OWNER, self.session_id))
        deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            if not (await handle.describe()).raw_description.pending_activities:
                break
            await asyncio.sleep(0.02)
        await terminate_sessions(self.env, OWNER, [self.session_id])

    async def history(self) -> list[ChatMessage]:
        """The whole history, a few messages per page (pages must not skip or repeat any)."""
        messages: list[ChatMessage] = []
        after = 0
        while True:
            page = await self.service.history(OWNER, self.session_id, after=after, limit=3)
            messages.extend(page.messages)
            if page.next is None:
                return messages
            after = page.next


@pytest.fixture(scope="module")
async def service(ts_env: WorkflowEnvironment) -> AsyncIterator[SessionService]:
    settings = scripted_settings(f"tq-props-{uuid.uuid4().hex[:8]}")
    async with build_worker(ts_env.client, settings):
        yield SessionService(ts_env.client, settings)


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,  # the same sequences on every run: CI failures reproduce
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ops=operations)
async def test_any_sequence_keeps_each_message_once_in_order(
    ts_env: WorkflowEnvironment, service: SessionService, ops: list[Op]
) -> None:
    session = Session(ts_env, service)
    config = SessionConfig(
        model="scripted/echo",
        inactivity_timeout_seconds=TIMEOUT_SECONDS,
        max_turns_per_run=TURNS_PER_RUN,
    )
    await service.create(OWNER, session.session_id, config)
    try:
        for op in ops:
            await session.apply(op)
        await session.settle()
        history = await session.history()
    finally:
        await session.close()

    assert [m.seq for m in history] == list(range(1, len(history) + 1))
    users, replies = history[::2], history[1::2]
    assert [m.id for m in users] == session.accepted  # each exactly once, in order
    assert len(replies) == len(users)  # each followed by exactly one reply
    for turn, (user, reply) in enumerate(zip(users, replies, strict=True), start=1):
        assert (user.role, user.content, user.turn) == ("user", session.content[user.id], turn)
        assert reply == session.replies[user.id]
        assert reply.turn == turn
