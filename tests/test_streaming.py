"""Replies as Server-Sent Events, through real gateway and worker processes on the dev server.

The scripted provider streams its reply a word at a time; `[[tok_delay=S]]` slows it so a
test can act mid-stream.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from activities.providers.scripted import tool_script
from api.streaming import Cursor
from cli.sse import ServerEvent, aiter_events
from common.ids import workflow_id
from tests.processes import (
    Gateway,
    Process,
    messages,
    new_session,
    running,
    stack_env,
    start,
    start_gateway,
    stopping,
)

SUBSCRIBER_LIMIT = 3


@pytest.fixture(scope="module")
def environ(dev_env: WorkflowEnvironment) -> dict[str, str]:
    return stack_env(
        dev_env,
        f"tq-sse-{uuid.uuid4().hex[:8]}",
        max_stream_subscribers=SUBSCRIBER_LIMIT,
        stream_token="internal-test-token",
    )


@pytest.fixture(scope="module")
async def gateway(environ: dict[str, str]) -> AsyncIterator[Gateway]:
    worker = start("worker", environ)
    gw = start_gateway(environ)
    with running(gw.process, worker):
        yield gw
        await gw.close_clients()


async def read_turn(
    client: httpx.AsyncClient,
    url: str,
    *,
    body: dict[str, Any] | None = None,
    last_event_id: str | None = None,
    stop_after_deltas: int | None = None,
) -> list[ServerEvent]:
    """The events of one stream, until `turn_completed` (or after `stop_after_deltas`)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    method = "POST" if body is not None else "GET"
    events: list[ServerEvent] = []
    async with client.stream(method, url, json=body, headers=headers) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in aiter_events(response.aiter_lines()):
            events.append(event)
            deltas = sum(1 for e in events if e.event == "delta")
            if event.event == "turn_completed" or deltas == stop_after_deltas:
                break
    return events


def text_of(events: list[ServerEvent], step: int = 1) -> str:
    """What a client shows for one step: deltas, minus anything withdrawn by a restart."""
    text = ""
    for event in events:
        if event.data.get("step") != step:
            continue
        if event.event == "restart":
            text = ""
        elif event.event == "delta":
            text += event.data["text"]
    return text


def send_url(session_id: str) -> str:
    return f"/v1/sessions/{session_id}/messages/stream"


def attach_url(session_id: str, message_id: str) -> str:
    return f"/v1/sessions/{session_id}/messages/{message_id}/stream"


async def reply_of(client: httpx.AsyncClient, session_id: str, message_id: str) -> dict[str, Any]:
    history = await messages(client, session_id)
    (reply,) = [m for m in history if m.get("reply_to") == message_id]
    return reply


async def test_deltas_concatenate_to_exactly_the_stored_reply(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice)
    content = "the  quick brown\tfox jumps over the lazy dog " * 5
    events = await read_turn(
        alice,
        send_url(session_id),
        body={"message_id": "m1", "content": "[[tok_delay=0.01]]" + content},
    )
    kinds = [e.event for e in events]
    assert kinds[0] == "turn_started" and kinds[-1] == "turn_completed"
    assert set(kinds[1:-1]) == {"delta"} and len(kinds) > 10
    assert all(e.id for e in events) and len({e.id for e in events}) == len(events)
    reply = await reply_of(alice, session_id, "m1")
    assert text_of(events) == reply["content"] == "echo: " + content.strip()
    done = events[-1].data
    assert done["message_id"] == reply["id"] and done["usage"]["completion_tokens"] > 0


SLOW = "[[tok_delay=0.05]]"
WORDS = " ".join(f"word{i}" for i in range(40))


async def test_resume_after_a_disconnect_continues_right_after_the_last_event(
    alice: httpx.AsyncClient,
) -> None:
    session_id = await new_session(alice)
    body = {"message_id": "m1", "content": SLOW + WORDS}
    first = await read_turn(alice, send_url(session_id), body=body, stop_after_deltas=5)
    await asyncio.sleep(0.3)  # disconnected; the generation goes on without a reader
    rest = await read_turn(alice, attach_url(session_id, "m1"), last_event_id=first[-1].id)
    assert rest[0].event == "delta", "a resumed stream does not repeat what was received"
    assert not {e.id for e in first} & {e.id for e in rest}
    reply = await reply_of(alice, session_id, "m1")
    assert text_of(first + rest) == reply["content"] == "echo: " + WORDS
    # After the turn finished: resume from a middle event; the rest comes from history.
    middle = [e for e in first if e.event == "delta"][2]
    tail = await read_turn(alice, attach_url(session_id, "m1"), last_event_id=middle.id)
    head = first[: first.index(middle) + 1]
    assert text_of(head + tail) == reply["content"]
    assert tail[-1].event == "turn_completed" and tail[-1].id == rest[-1].id


async def test_a_second_subscriber_receives_the_same_events(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice)
    body = {"message_id": "m1", "content": SLOW + WORDS}
    sender = asyncio.create_task(read_turn(alice, send_url(session_id), body=body))
    await asyncio.sleep(0.5)
    other_tab = await read_turn(alice, f"/v1/sessions/{session_id}/stream")
    first = await sender

    def deltas(events: list[ServerEvent]) -> list[tuple[str | None, str]]:
        return [(e.id, e.data["text"]) for e in events if e.event == "delta"]

    assert deltas(other_tab) == deltas(first) and len(deltas(first)) > 20
    assert other_tab[-1] == first[-1]


async def test_subscribers_per_session_are_bounded(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice)
    await alice.post(
        f"/v1/sessions/{session_id}/messages?wait=false",
        json={"message_id": "m1", "content": "[[tok_delay=0.2]]" + WORDS},
    )
    url = attach_url(session_id, "m1")
    opened = [alice.stream("GET", url) for _ in range(SUBSCRIBER_LIMIT)]
    try:
        for stream in opened:
            assert (await stream.__aenter__()).status_code == 200
        refused = await alice.get(url)
        assert refused.status_code == 429, refused.text
        assert "live streams" in refused.json()["detail"]
    finally:
        for stream in opened:
            await stream.__aexit__(None, None, None)


async def test_stream_errors_are_clear_and_private(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    session_id = await new_session(alice)
    done = await read_turn(alice, send_url(session_id), body={"message_id": "m1", "content": "a"})
    bad = await alice.get(attach_url(session_id, "m1"), headers={"Last-Event-ID": "nonsense"})
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["detail"]
    other_turn = done[-1].id.replace("1.", "7.", 1)  # type: ignore[union-attr]
    wrong = await alice.get(attach_url(session_id, "m1"), headers={"Last-Event-ID": other_turn})
    assert wrong.status_code == 400 and "turn 7" in wrong.json()["detail"]
    unknown = await alice.get(attach_url(session_id, "nope"))
    assert unknown.status_code == 404 and "'nope'" in unknown.json()["detail"]
    idle = await alice.get(f"/v1/sessions/{session_id}/stream")
    assert idle.status_code == 404 and "no turn in progress" in idle.json()["detail"]
    assert (await bob.get(attach_url(session_id, "m1"))).status_code == 404
    assert (await bob.get(f"/v1/sessions/{session_id}/stream")).status_code == 404
    sent = await bob.post(send_url(session_id), json={"content": "mine now"})
    assert sent.status_code == 404
    too_long = await alice.post(send_url(session_id), json={"content": "x" * 20_000})
    assert too_long.status_code == 413
    assert len(await messages(alice, session_id)) == 2, "refused sends stored nothing"
    anonymous = httpx.AsyncClient(base_url=str(alice.base_url))
    async with anonymous:
        assert (await anonymous.get(attach_url(session_id, "m1"))).status_code == 401


async def test_tool_calls_and_results_are_events(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice, tools=["calculate"])
    calls = [("calculate", {"expression": "6*7"}), ("calculate", {"expression": "1+1"})]
    content = tool_script(calls) + " the answer"
    events = await read_turn(
        alice, send_url(session_id), body={"message_id": "m1", "content": content}
    )
    kinds = [e.event for e in events if e.event != "delta"]
    assert kinds == [
        "turn_started",
        *["tool_call"] * 2,
        *["tool_result"] * 2,
        "turn_completed",
    ]
    asked = [e.data for e in events if e.event == "tool_call"]
    answered = [e.data for e in events if e.event == "tool_result"]
    assert all(c["name"] == "calculate" and not c["needs_approval"] for c in asked)
    assert [r["call_id"] for r in answered] == [c["id"] for c in asked]
    assert [r["content"] for r in answered] == ["42", "2"]
    positions = [Cursor.decode(e.id or "") for e in events if e.event == "tool_result"]
    assert [(p.step, p.index) for p in positions] == [(1, 0), (1, 1)]
    assert len({e.id for e in events}) == len(events)
    reply = await reply_of(alice, session_id, "m1")
    assert text_of(events, step=2) == reply["content"] and "42 | 2" in reply["content"]


async def test_a_long_reply_costs_the_same_history_events_as_a_short_one(
    alice: httpx.AsyncClient, dev_env: WorkflowEnvironment
) -> None:
    session_id = await new_session(alice)
    handle = dev_env.client.get_workflow_handle(workflow_id("alice", session_id))

    async def events_after(message_id: str, words: int) -> int:
        content = "[[tok_delay=0.001]]" + " ".join(["token"] * words)
        events = await read_turn(
            alice, send_url(session_id), body={"message_id": message_id, "content": content}
        )
        assert sum(1 for e in events if e.event == "delta") > 1
        history = await handle.fetch_history()
        return len(history.events)

    start = await events_after("warmup", 20)
    short = await events_after("short", 20) - start
    long = await events_after("long", 2000) - start - short
    assert long == short, f"a 2,000-token turn added {long} events, a 20-token one {short}"


async def test_reconnect_through_another_gateway_process(
    alice: httpx.AsyncClient, environ: dict[str, str]
) -> None:
    session_id = await new_session(alice)
    body = {"message_id": "m1", "content": SLOW + WORDS}
    first = await read_turn(alice, send_url(session_id), body=body, stop_after_deltas=4)
    second = start_gateway(environ)
    with running(second.process):
        other = second.client()
        rest = await read_turn(other, attach_url(session_id, "m1"), last_event_id=first[-1].id)
        await second.close_clients()
    reply = await reply_of(alice, session_id, "m1")
    assert text_of(first + rest) == reply["content"] == "echo: " + WORDS


@pytest.mark.slow
async def test_worker_killed_mid_stream_restarts_the_text(dev_env: WorkflowEnvironment) -> None:
    """kill -9 of the worker streaming a reply: the client sees `restart`, then the whole
    reply from the retry on a new worker; history holds it once."""
    environ = stack_env(dev_env, f"tq-sse-kill-{uuid.uuid4().hex[:8]}")
    doomed = start("worker", environ)
    gateway = start_gateway(environ)
    spares: list[Process] = []
    with running(gateway.process, doomed), stopping(spares):
        alice = gateway.client()
        session_id = await new_session(alice)
        body = {"message_id": "m1", "content": SLOW + WORDS}
        events: list[ServerEvent] = []
        async with alice.stream("POST", send_url(session_id), json=body) as response:
            assert response.status_code == 200
            async for event in aiter_events(response.aiter_lines()):
                events.append(event)
                if sum(1 for e in events if e.event == "delta") == 5 and doomed.proc.poll() is None:
                    doomed.kill_hard()
                    replacement = start("worker", environ)
                    spares.append(replacement)
                if event.event == "turn_completed":
                    break
        with running(replacement):
            history = await messages(alice, session_id)
            await gateway.close_clients()
    kinds = [e.event for e in events]
    restart = kinds.index("restart")
    assert 5 <= restart < kinds.index("turn_completed")
    # Attempt 2 normally; a loaded machine can lose one more attempt to a heartbeat timeout.
    assert events[restart].data["step"] == 1 and events[restart].data["attempt"] >= 2
    assert text_of(events) == "echo: " + WORDS
    assert [m["content"] for m in history if m["role"] == "assistant"] == ["echo: " + WORDS]
