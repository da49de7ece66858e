"""Per-user quotas and per-session limits.

First the quota workflow and the session workflow on the time-skipping server (a minute or a
day passes in milliseconds), then the HTTP contract through real gateway and worker processes.
"""

import asyncio
import contextlib
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, TypeVar

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from api.errors import ApiError
from api.quotas import Quotas
from api.service import SessionService
from common.ids import quota_workflow_id, workflow_id
from tests.conftest import scripted_settings
from tests.processes import ALICE_KEY, BOB_KEY, Gateway, messages, new_session, serving, stack_env
from worker.build import build_worker
from workflows.messages import ChatMessage, SendMessage, SessionConfig
from workflows.quota import SESSION_START_GRACE, UserQuotaWorkflow
from workflows.quota_messages import (
    RATE_LIMITED,
    SESSION_LIMIT,
    TOKEN_QUOTA_EXHAUSTED,
    QuotaCounters,
    QuotaInput,
    QuotaView,
    TurnUsage,
)
from workflows.session import SESSION_FULL

# ---- the workflows, on the time-skipping server ------------------------------------------


@dataclass
class Harness:
    env: WorkflowEnvironment
    task_queue: str
    users: list[str] = field(default_factory=list)
    sessions: list[tuple[str, str]] = field(default_factory=list)

    def user(self) -> str:
        user = f"u-{uuid.uuid4().hex[:10]}"
        self.users.append(user)
        return user

    def quotas(self, **settings: object) -> Quotas:
        return Quotas(self.env.client, scripted_settings(self.task_queue, **settings))

    def service(self, **settings: object) -> SessionService:
        return SessionService(self.env.client, scripted_settings(self.task_queue, **settings))

    async def create(self, service: SessionService, owner: str, **config: object) -> str:
        session_id = uuid.uuid4().hex[:12]
        self.sessions.append((owner, session_id))
        values: dict[str, object] = {"model": "scripted/echo", **config}
        await service.create(owner, session_id, SessionConfig(**values))
        return session_id

    async def usage(self, user: str) -> QuotaView:
        handle = self.env.client.get_workflow_handle(quota_workflow_id(user))
        view: QuotaView = await handle.query("usage", result_type=QuotaView)
        return view

    async def counters(self, user: str) -> QuotaCounters:
        handle = self.env.client.get_workflow_handle(quota_workflow_id(user))
        counters: QuotaCounters = await handle.query("counters", result_type=QuotaCounters)
        return counters


@pytest.fixture
async def ts(ts_env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Harness]:
    async with build_worker(ts_env.client, scripted_settings(task_queue)):
        harness = Harness(ts_env, task_queue)
        yield harness
        # Nothing may stay running with a timer once the worker is gone (see conftest).
        ids = [quota_workflow_id(u) for u in harness.users]
        ids += [workflow_id(owner, s) for owner, s in harness.sessions]
        for wf_id in ids:
            with contextlib.suppress(RPCError):
                await ts_env.client.get_workflow_handle(wf_id).terminate("test finished")


async def refusal(call: Awaitable[object]) -> ApplicationError:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await call
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


def retry_after(error: ApplicationError) -> int:
    assert error.next_retry_delay is not None
    return int(error.next_retry_delay.total_seconds())


async def test_messages_per_minute_is_a_sliding_window(ts: Harness) -> None:
    alice, bob = ts.user(), ts.user()
    quotas = ts.quotas(quota_messages_per_minute=3)
    await quotas.admit_message(alice, "s", "m1")
    await ts.env.sleep(20)
    await quotas.admit_message(alice, "s", "m2")
    await quotas.admit_message(alice, "s", "m3")

    refused = await refusal(quotas.admit_message(alice, "s", "m4"))
    assert refused.type == RATE_LIMITED
    assert retry_after(refused) == 40  # when m1, 20 s older than the others, leaves the minute
    assert "3 messages in the last minute" in refused.message
    assert "3 per minute" in refused.message
    assert "40 s" in refused.message
    # A resend of a counted message is not a new message; another user has their own quota.
    await quotas.admit_message(alice, "s", "m2")
    await quotas.admit_message(bob, "s", "m1")

    await ts.env.sleep(40)
    await quotas.admit_message(alice, "s", "m4")
    refused = await refusal(quotas.admit_message(alice, "s", "m5"))
    assert retry_after(refused) == 20  # m2 and m3 go next
    assert (await ts.usage(alice)).messages_last_minute == 3
    assert (await ts.usage(bob)).messages_last_minute == 1


async def test_tokens_per_day_reset_at_midnight_utc(ts: Harness) -> None:
    alice = ts.user()
    quotas = ts.quotas(quota_tokens_per_day=1000)
    await quotas.admit_message(alice, "s", "m1")  # starts the quota workflow
    handle = ts.env.client.get_workflow_handle(quota_workflow_id(alice))
    await handle.signal("record_usage", TurnUsage(session_id="s", message_id="m1", tokens=999))
    await quotas.admit_message(alice, "s", "m2")  # 999 < 1000: still admitted
    await handle.signal("record_usage", TurnUsage(session_id="s", message_id="m2", tokens=300))

    refused = await refusal(quotas.admit_message(alice, "s", "m3"))
    now = await ts.env.get_current_time()
    midnight = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
    assert refused.type == TOKEN_QUOTA_EXHAUSTED
    assert abs(retry_after(refused) - math.ceil((midnight - now).total_seconds())) <= 2
    assert "1,299 of your 1,000 model tokens for today (UTC)" in refused.message
    assert "resets at 00:00 UTC" in refused.message

    await ts.env.sleep(retry_after(refused) - 5)  # still the same day
    assert (await refusal(quotas.admit_message(alice, "s", "m3"))).type == TOKEN_QUOTA_EXHAUSTED
    await ts.env.sleep(6)  # the next UTC day
    await quotas.admit_message(alice, "s", "m3")
    assert (await ts.usage(alice)).tokens_today == 0


async def test_continue_as_new_keeps_the_counters(ts: Harness) -> None:
    alice = ts.user()
    await ts.env.client.start_workflow(
        UserQuotaWorkflow.run,
        QuotaInput(user=alice, max_requests_per_run=3),
        id=quota_workflow_id(alice),
        task_queue=ts.task_queue,
    )
    quotas = ts.quotas(
        quota_messages_per_minute=4, quota_tokens_per_day=100, max_sessions_per_user=1
    )
    handle = ts.env.client.get_workflow_handle(quota_workflow_id(alice))
    first_run = (await handle.describe()).run_id
    await quotas.reserve_session(alice, "s1")
    await quotas.admit_message(alice, "s1", "m1")
    await handle.signal("record_usage", TurnUsage(session_id="s1", message_id="m1", tokens=60))
    await ts.env.sleep(10)
    await quotas.admit_message(alice, "s1", "m2")  # the 4th request of the run: in the next one

    old = ts.env.client.get_workflow_handle(quota_workflow_id(alice), run_id=first_run)
    assert (await old.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW
    view = await ts.usage(alice)
    assert (view.runs, view.messages_last_minute, view.tokens_today, view.open_sessions) == (
        2,
        2,
        60,
        1,
    )
    # The carried window still knows when m1 was admitted.
    await quotas.admit_message(alice, "s1", "m3")
    await quotas.admit_message(alice, "s1", "m4")
    refused = await refusal(quotas.admit_message(alice, "s1", "m5"))
    assert (refused.type, retry_after(refused)) == (RATE_LIMITED, 50)
    assert (await refusal(quotas.reserve_session(alice, "s2"))).type == SESSION_LIMIT


async def test_a_slot_whose_session_never_starts_lapses(ts: Harness) -> None:
    """As when a gateway crashes between the reservation and the session's start."""
    alice = ts.user()
    quotas = ts.quotas(max_sessions_per_user=1)
    await quotas.reserve_session(alice, "never-started")
    await quotas.reserve_session(alice, "never-started")  # a retry takes no second slot
    assert (await refusal(quotas.reserve_session(alice, "other"))).type == SESSION_LIMIT
    await ts.env.sleep(SESSION_START_GRACE)
    await quotas.reserve_session(alice, "other")
    assert (await ts.counters(alice)).open_sessions.keys() == {"other"}


async def test_a_session_reports_its_tokens_opening_and_closing(ts: Harness) -> None:
    alice = ts.user()
    service = ts.service(quota_tokens_per_day=10_000, max_sessions_per_user=1)
    first = await ts.create(service, alice, inactivity_timeout_seconds=60)
    refused = await refusal(ts.create(service, alice))
    assert refused.type == SESSION_LIMIT
    assert "1 open sessions" in refused.message

    reply = await say(service, alice, first, "count my tokens")
    assert reply.usage is not None and reply.usage.total_tokens > 0
    tokens = reply.usage.total_tokens
    await until(lambda: ts.usage(alice), lambda v: v.tokens_today == tokens)
    assert (await ts.counters(alice)).open_sessions == {first: None}  # confirmed by the session

    await service.end(alice, first)
    await until(lambda: ts.usage(alice), lambda v: v.open_sessions == 0)
    second = await ts.create(service, alice, inactivity_timeout_seconds=60)
    # Resuming the ended session would open a second one.
    assert (await refusal(say(service, alice, first, "again"))).type == SESSION_LIMIT
    with pytest.raises(WorkflowUpdateFailedError):
        await service.send(alice, first, SendMessage(message_id="m-again", content="again"))
    assert (await service.status(alice, first)).status == "ended"

    await ts.env.sleep(61)  # the second expires: its slot is free
    await until(lambda: ts.usage(alice), lambda v: v.open_sessions == 0)
    assert (await say(service, alice, first, "back")).content == "echo: back"
    assert (await ts.counters(alice)).open_sessions == {first: None}
    assert second != first


async def test_messages_per_session(ts: Harness) -> None:
    alice = ts.user()
    service = ts.service(max_messages_per_session=2)
    session_id = await ts.create(service, alice, max_messages=2, inactivity_timeout_seconds=60)
    await say(service, alice, session_id, "one", "m1")
    await say(service, alice, session_id, "two", "m2")
    before = await history(service, alice, session_id)

    refused = await refusal(say(service, alice, session_id, "three"))
    assert refused.type == SESSION_FULL
    assert "limit of 2 messages" in refused.message
    with pytest.raises(ApiError) as info:  # by signal: checked at the gateway
        await service.send(alice, session_id, SendMessage(message_id="m3", content="three"))
    assert info.value.status == 409
    assert (await say(service, alice, session_id, "two", "m2")).content == "echo: two"
    await service.send(alice, session_id, SendMessage(message_id="m1", content="one"))
    assert await history(service, alice, session_id) == before

    # After expiry the next run knows its count only once it has loaded the old history.
    await ts.env.sleep(61)
    refused = await refusal(say(service, alice, session_id, "resumed"))
    assert refused.type == SESSION_FULL
    status = await service.status(alice, session_id)
    assert (status.turns, status.queued, status.max_messages) == (2, 0, 2)
    assert await history(service, alice, session_id) == before


async def test_concurrent_requests_never_pass_a_limit(ts: Harness) -> None:
    alice = ts.user()
    service = ts.service(quota_messages_per_minute=3, max_sessions_per_user=2)
    created = await asyncio.gather(
        *(ts.create(service, alice) for _ in range(6)), return_exceptions=True
    )
    refused = [c for c in created if isinstance(c, WorkflowUpdateFailedError)]
    assert (len(created) - len(refused), len(refused)) == (2, 4)
    session_id = next(c for c in created if isinstance(c, str))
    quotas = ts.quotas(quota_messages_per_minute=3)
    admitted = await asyncio.gather(
        *(quotas.admit_message(alice, session_id, f"m{n}") for n in range(7)),
        return_exceptions=True,
    )
    assert sum(a is None for a in admitted) == 3


async def test_no_worker_for_the_quota_is_503_not_a_hang(
    dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On the dev server: a request left waiting on the time-skipping one stops its clock.
    monkeypatch.setattr("api.quotas.QUOTA_TIMEOUT_SECONDS", 0.5)
    user = f"u-{uuid.uuid4().hex[:10]}"
    nobody = Quotas(dev_env.client, scripted_settings("tq-nobody", quota_messages_per_minute=1))
    try:
        with pytest.raises(ApiError) as info:
            await nobody.admit_message(user, "s", "m")
        assert info.value.status == 503
    finally:
        await _terminate_quotas(dev_env.client, [user])


async def test_with_no_quota_settings_there_is_no_quota_call(ts: Harness) -> None:
    alice = ts.user()
    service = ts.service()
    session_id = await ts.create(service, alice)
    await say(service, alice, session_id, "hello")
    await service.send(alice, session_id, SendMessage(message_id="by-signal", content="hi"))
    await until(lambda: service.reply(alice, session_id, "by-signal"), lambda r: r.state == "done")
    with pytest.raises(RPCError) as info:
        await ts.env.client.get_workflow_handle(quota_workflow_id(alice)).describe()
    assert info.value.status == RPCStatusCode.NOT_FOUND
    events = await ts.env.client.get_workflow_handle(workflow_id(alice, session_id)).fetch_history()
    signalled = EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED
    assert not [e for e in events.events if e.event_type == signalled]


async def say(
    service: SessionService, owner: str, session_id: str, content: str, message_id: str = ""
) -> ChatMessage:
    msg = SendMessage(message_id=message_id or uuid.uuid4().hex, content=content)
    reply = await service.send_and_wait(owner, session_id, msg)
    assert reply is not None and reply.reply is not None
    return reply.reply


async def history(service: SessionService, owner: str, session_id: str) -> list[ChatMessage]:
    return (await service.history(owner, session_id, after=0, limit=500)).messages


T = TypeVar("T")


async def until(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], seconds: float = 10
) -> T:
    """Signals from a session reach its quota workflow moments after the reply."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = await read()
        if done(value) or asyncio.get_running_loop().time() > deadline:
            assert done(value), value
            return value
        await asyncio.sleep(0.05)


# ---- over HTTP, real gateway and worker processes --------------------------------------

RUN = uuid.uuid4().hex[:6]  # users of this module only: quota workflows are per user id
CAROL_KEY, DAVE_KEY, ERIN_KEY = "test-key-carol", "test-key-dave", "test-key-erin"
PER_MINUTE, TOKENS_PER_DAY, SESSIONS, MESSAGES = 4, 200, 2, 3


@pytest.fixture(scope="module")
async def gateway(dev_env: WorkflowEnvironment) -> AsyncIterator[Gateway]:
    users = {ALICE_KEY: "alice", BOB_KEY: "bob", CAROL_KEY: "carol", DAVE_KEY: "dave"}
    users[ERIN_KEY] = "erin"
    environ = stack_env(
        dev_env,
        f"tq-quota-{RUN}",
        api_keys={key: f"{name}-{RUN}" for key, name in users.items()},
        quota_messages_per_minute=PER_MINUTE,
        quota_tokens_per_day=TOKENS_PER_DAY,
        max_sessions_per_user=SESSIONS,
        max_messages_per_session=MESSAGES,
    )
    with serving(environ) as gw:
        yield gw
        await gw.close_clients()
        await _terminate_quotas(dev_env.client, [f"{name}-{RUN}" for name in users.values()])


async def _terminate_quotas(client: Client, users: list[str]) -> None:
    for user in users:
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(quota_workflow_id(user)).terminate("tests done")


async def post(client: httpx.AsyncClient, session_id: str, content: str, **params: Any) -> Any:
    return await client.post(
        f"/v1/sessions/{session_id}/messages", json={"content": content}, params=params
    )


async def unchanged(
    client: httpx.AsyncClient, session_id: str, before: list[dict[str, Any]]
) -> None:
    """Nothing was queued or stored."""
    assert await messages(client, session_id) == before
    status = (await client.get(f"/v1/sessions/{session_id}")).json()
    assert status["queued"] == 0
    assert status["turns"] == sum(m["role"] == "user" for m in before)


async def test_past_messages_per_minute_429_with_retry_after(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    sessions = [await new_session(alice), await new_session(alice)]
    for n in range(PER_MINUTE):
        assert (await post(alice, sessions[n % 2], f"message {n}")).status_code == 200
    before = await messages(alice, sessions[0])

    for params in ({}, {"wait": "false"}):
        refused = await post(alice, sessions[0], "one too many", **params)
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        detail = refused.json()["detail"]
        assert f"the limit is {PER_MINUTE} per minute" in detail
        assert "Retry in" in detail
    streamed = await alice.post(
        f"/v1/sessions/{sessions[0]}/messages/stream", json={"content": "one too many"}
    )
    assert streamed.status_code == 429
    assert "Retry-After" in streamed.headers
    await unchanged(alice, sessions[0], before)

    # Alice's quota is hers alone.
    bobs = await new_session(bob)
    answered = await post(bob, bobs, "hello")
    assert answered.status_code == 200, answered.text


async def test_past_tokens_per_day_429_until_midnight_utc(gateway: Gateway) -> None:
    carol = gateway.client(CAROL_KEY)
    session_id = await new_session(carol)
    long = " ".join(["word"] * TOKENS_PER_DAY)  # its turn alone uses more than the quota
    assert (await post(carol, session_id, long)).status_code == 200
    before = await messages(carol, session_id)

    deadline = asyncio.get_running_loop().time() + 10
    while True:  # the turn's tokens reach the quota moments after the reply
        refused = await post(carol, session_id, "more")
        if refused.status_code != 200 or asyncio.get_running_loop().time() > deadline:
            break
        before = await messages(carol, session_id)
    assert refused.status_code == 429, refused.text
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
    assert abs(int(refused.headers["Retry-After"]) - (midnight - now).total_seconds()) < 10
    assert "model tokens for today (UTC)" in refused.json()["detail"]
    await unchanged(carol, session_id, before)


async def test_sessions_per_user_409_then_a_slot_frees_when_one_ends(
    gateway: Gateway, dev_env: WorkflowEnvironment
) -> None:
    dave = gateway.client(DAVE_KEY)
    first, _ = await new_session(dave), await new_session(dave)
    refused = await dave.post("/v1/sessions", json={"session_id": "third"})
    assert refused.status_code == 409
    assert f"You have {SESSIONS} open sessions" in refused.json()["detail"]
    assert (await dave.get("/v1/sessions/third")).status_code == 404  # nothing was started

    assert (await dave.delete(f"/v1/sessions/{first}")).status_code == 200
    # The ended session frees its slot as its run closes, moments after DELETE answers.
    handle = dev_env.client.get_workflow_handle(workflow_id(f"dave-{RUN}", first))
    await until(handle.describe, lambda d: d.status == WorkflowExecutionStatus.COMPLETED)
    created = await dave.post("/v1/sessions", json={"session_id": "third"})
    assert created.status_code == 201, created.text

    # A message would resume the ended session: a third open one.
    before = await messages(dave, first)
    resumed = await post(dave, first, "are you there?")
    assert resumed.status_code == 409
    assert "open sessions" in resumed.json()["detail"]
    assert await messages(dave, first) == before
    assert (await dave.get(f"/v1/sessions/{first}")).json()["status"] == "ended"


async def test_messages_per_session_409(gateway: Gateway) -> None:
    erin = gateway.client(ERIN_KEY)
    session_id = await new_session(erin)
    for n in range(MESSAGES):
        assert (await post(erin, session_id, f"message {n}")).status_code == 200
    before = await messages(erin, session_id)

    for params in ({"wait": "false"}, {}):
        refused = await post(erin, session_id, "one more", **params)
        assert refused.status_code == 409, refused.text
        assert refused.json()["detail"] == (
            f"This session has reached its limit of {MESSAGES} messages; start a new session."
        )
    await unchanged(erin, session_id, before)
    status = (await erin.get(f"/v1/sessions/{session_id}")).json()
    assert status["max_messages"] == MESSAGES


async def test_a_model_name_has_a_length_limit(bob: httpx.AsyncClient) -> None:
    refused = await bob.post("/v1/sessions", json={"model": "scripted/" + "e" * 200})
    assert refused.status_code == 422
    assert "200 characters" in refused.text
