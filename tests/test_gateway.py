"""The HTTP contract, through a real gateway process and a real worker on the dev server."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.processes import (
    Gateway,
    messages,
    new_session,
    poll_reply,
    serving,
    stack_env,
)

MAX_CHARS = 2000


@pytest.fixture(scope="module")
async def gateway(dev_env: WorkflowEnvironment) -> AsyncIterator[Gateway]:
    environ = stack_env(
        dev_env,
        f"tq-gw-{uuid.uuid4().hex[:8]}",
        max_message_chars=MAX_CHARS,
        max_system_prompt_chars=500,
        max_request_bytes=16_384,
        reply_wait_seconds=2,
    )
    with serving(environ) as gw:
        yield gw
        await gw.close_clients()


async def say(client: httpx.AsyncClient, session_id: str, content: str, **body: Any) -> Any:
    response = await client.post(
        f"/v1/sessions/{session_id}/messages", json={"content": content, **body}
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_health_needs_no_key(gateway: Gateway) -> None:
    response = await gateway.client(key=None).get("/healthz")
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_requests_without_a_valid_key_are_refused(gateway: Gateway, key: str | None) -> None:
    client = gateway.client(key=key)
    for method, path in [
        ("POST", "/v1/sessions"),
        ("GET", "/v1/sessions"),
        ("GET", "/v1/sessions/x"),
        ("POST", "/v1/sessions/x/messages"),
        ("DELETE", "/v1/sessions/x"),
    ]:
        response = await client.request(method, path, json={"content": "hi"})
        assert response.status_code == 401, (method, path)
        assert "API key" in response.json()["detail"]


async def test_a_conversation(alice: httpx.AsyncClient) -> None:
    created = await alice.post(
        "/v1/sessions", json={"system_prompt": "be brief", "inactivity_timeout_seconds": 600}
    )
    assert created.status_code == 201
    body = created.json()
    assert body["model"] == "scripted/echo"
    assert body["temporal_ui_url"].endswith("chat%3Aalice%3A" + body["session_id"])
    session_id = body["session_id"]

    first = await say(alice, session_id, "hello there", message_id="m-1")
    assert first["message_id"] == "m-1"
    assert first["reply"]["role"] == "assistant"
    assert first["reply"]["content"] == "echo: hello there"
    assert first["reply"]["usage"]["total_tokens"] > 0
    second = await say(alice, session_id, "and again")
    assert len(second["message_id"]) > 0

    history = await messages(alice, session_id)
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "hello there"),
        ("assistant", "echo: hello there"),
        ("user", "and again"),
        ("assistant", "echo: and again"),
    ]
    page = (await alice.get(f"/v1/sessions/{session_id}/messages?limit=3")).json()
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3]
    rest = (await alice.get(f"/v1/sessions/{session_id}/messages?after={page['next']}")).json()
    assert [m["seq"] for m in rest["messages"]] == [4]
    assert rest["next"] is None

    status = (await alice.get(f"/v1/sessions/{session_id}")).json()
    assert status["status"] == "active"
    assert status["turns"] == 2
    assert status["system_prompt"] == "be brief"
    assert status["usage"]["total_tokens"] == sum(
        m["usage"]["total_tokens"] for m in history if m["role"] == "assistant"
    )


async def test_resending_a_message_id_adds_nothing(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice)
    first = await say(alice, session_id, "once", message_id="same")
    again = await asyncio.gather(
        *(say(alice, session_id, "once", message_id="same") for _ in range(3))
    )
    assert all(reply == first for reply in again)
    assert len(await messages(alice, session_id)) == 2


async def test_wait_false_answers_202_and_the_reply_can_be_fetched(
    alice: httpx.AsyncClient,
) -> None:
    session_id = await new_session(alice)
    response = await alice.post(
        f"/v1/sessions/{session_id}/messages?wait=false", json={"content": "later"}
    )
    assert response.status_code == 202
    location = response.headers["Location"]
    assert response.json()["reply_url"] == location
    reply = await poll_reply(alice, location)
    assert reply["reply"]["content"] == "echo: later"


async def test_a_slow_reply_past_the_wait_limit_becomes_202(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice)
    response = await alice.post(
        f"/v1/sessions/{session_id}/messages", json={"content": "[[delay=4]] slow"}
    )
    assert response.status_code == 202, response.text
    reply = await poll_reply(alice, response.headers["Location"])
    assert reply["reply"]["content"] == "echo: slow"
    assert len(await messages(alice, session_id)) == 2


async def test_users_never_see_each_others_sessions(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    session_id = await new_session(alice, session_id=f"private-{uuid.uuid4().hex[:6]}")
    only_alice = await new_session(alice, session_id=f"only-alice-{uuid.uuid4().hex[:6]}")
    await say(alice, session_id, "secret plans")
    for method, path, body in [
        ("GET", f"/v1/sessions/{session_id}", None),
        ("GET", f"/v1/sessions/{session_id}/messages", None),
        ("GET", f"/v1/sessions/{session_id}/messages/anything", None),
        ("POST", f"/v1/sessions/{session_id}/messages", {"content": "let me in"}),
        ("DELETE", f"/v1/sessions/{session_id}", None),
    ]:
        response = await bob.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert "secret" not in response.text
    # Bob may even use the same session id: it is a different session.
    assert await new_session(bob, session_id=session_id) == session_id
    assert (await say(bob, session_id, "mine"))["reply"]["content"] == "echo: mine"

    alice_ids = await listed(alice, expect=only_alice)
    bob_ids = await listed(bob, expect=session_id)
    assert [m["content"] for m in await messages(alice, session_id)] == [
        "secret plans",
        "echo: secret plans",
    ]
    # Both lists hold the id both chose; Alice's other session is in hers only. (Other test
    # modules on the same server also act as "alice" and "bob", so the lists hold more.)
    assert session_id in alice_ids and session_id in bob_ids
    assert only_alice not in bob_ids


async def listed(client: httpx.AsyncClient, expect: str | None = None) -> set[str]:
    """Session ids in the caller's list; visibility lags a little, so wait for `expect`."""
    for _ in range(50):
        response = await client.get("/v1/sessions")
        assert response.status_code == 200, response.text
        ids = {s["session_id"] for s in response.json()["sessions"]}
        if expect is None or expect in ids:
            return ids
        await asyncio.sleep(0.1)
    raise AssertionError(f"{expect} never appeared in the list")


async def test_end_then_a_message_resumes_with_history(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice)
    await say(alice, session_id, "before")
    ended = await alice.delete(f"/v1/sessions/{session_id}")
    assert ended.status_code == 200
    assert ended.json()["status"] == "ended"
    assert (await alice.get(f"/v1/sessions/{session_id}")).json()["status"] == "ended"
    await say(alice, session_id, "after")
    status = (await alice.get(f"/v1/sessions/{session_id}")).json()
    assert (status["status"], status["turns"], status["runs"]) == ("active", 2, 2)
    assert [m["content"] for m in await messages(alice, session_id)] == [
        "before",
        "echo: before",
        "after",
        "echo: after",
    ]


async def test_expired_session_resumes_with_history(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice, inactivity_timeout_seconds=1)
    await say(alice, session_id, "first")
    for _ in range(100):
        if (await alice.get(f"/v1/sessions/{session_id}")).json()["status"] == "expired":
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the session did not expire")
    # Ending an already expired session changes nothing and says so.
    ended = await alice.delete(f"/v1/sessions/{session_id}")
    assert (ended.status_code, ended.json()["status"]) == (200, "expired")
    assert (await say(alice, session_id, "second"))["reply"]["content"] == "echo: second"
    assert len(await messages(alice, session_id)) == 4


async def test_replies_to_unknown_or_invalid_message_ids(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice)
    unknown = await alice.get(f"/v1/sessions/{session_id}/messages/not-sent-yet")
    assert unknown.status_code == 404
    assert "not-sent-yet" in unknown.json()["detail"]
    invalid = await alice.get(f"/v1/sessions/{session_id}/messages/bad.id")
    assert invalid.status_code == 422


async def test_duplicate_session_id_is_a_conflict(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice, session_id=f"dup-{uuid.uuid4().hex[:6]}")
    response = await alice.post("/v1/sessions", json={"session_id": session_id})
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


BAD_MESSAGES: list[tuple[str, Any, int, str]] = [
    ("empty content", {"content": ""}, 422, "empty"),
    ("blank content", {"content": "   \n "}, 422, "empty"),
    ("oversized content", {"content": "x" * (MAX_CHARS + 1)}, 413, "limit is 2000"),
    ("missing content", {}, 422, "content"),
    ("content not a string", {"content": 5}, 422, "content"),
    ("unknown field", {"content": "hi", "role": "system"}, 422, "role"),
    ("bad message id", {"content": "hi", "message_id": "no spaces allowed"}, 422, "message_id"),
]


@pytest.mark.parametrize(("case", "body", "code", "says"), BAD_MESSAGES)
async def test_bad_messages_are_refused_and_change_nothing(
    alice: httpx.AsyncClient, case: str, body: Any, code: int, says: str
) -> None:
    session_id = await new_session(alice)
    await say(alice, session_id, "kept")
    response = await alice.post(f"/v1/sessions/{session_id}/messages", json=body)
    assert response.status_code == code, (case, response.text)
    assert says in response.text
    assert [m["content"] for m in await messages(alice, session_id)] == ["kept", "echo: kept"]


async def test_malformed_json_and_oversized_bodies(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice)
    response = await alice.post(
        f"/v1/sessions/{session_id}/messages",
        content=b'{"content": "unterminated',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "JSON" in response.text
    huge = b'{"content": "' + b"y" * 20_000 + b'"}'
    response = await alice.post(
        f"/v1/sessions/{session_id}/messages",
        content=huge,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert "16384 bytes" in response.json()["detail"]
    assert await messages(alice, session_id) == []


async def test_unknown_or_invalid_sessions_are_404(alice: httpx.AsyncClient) -> None:
    for path in ["/v1/sessions/never-made", "/v1/sessions/never-made/messages", "/v1/sessions/a.b"]:
        response = await alice.get(path)
        assert response.status_code == 404, path
    response = await alice.post("/v1/sessions/never-made/messages", json={"content": "hello?"})
    assert response.status_code == 404
    assert "never-made" in response.json()["detail"]
    assert "never-made" not in await listed(alice)


BAD_SESSIONS: list[tuple[dict[str, Any], int, str]] = [
    ({"inactivity_timeout_seconds": 0}, 422, "inactivity_timeout_seconds"),
    ({"inactivity_timeout_seconds": -5}, 422, "inactivity_timeout_seconds"),
    ({"inactivity_timeout_seconds": 10**9}, 422, "inactivity_timeout_seconds"),
    ({"inactivity_timeout_seconds": "soon"}, 422, "inactivity_timeout_seconds"),
    ({"model": "gpt-4"}, 422, "<provider>/<model>"),
    ({"model": "openai/gpt-4o"}, 422, "not configured"),
    ({"system_prompt": "z" * 501}, 413, "limit is 500"),
    ({"session_id": "has space"}, 422, "session_id"),
    ({"session_id": "x" * 65}, 422, "session_id"),
]


@pytest.mark.parametrize(("body", "code", "says"), BAD_SESSIONS)
async def test_bad_session_requests_are_refused(
    alice: httpx.AsyncClient, body: dict[str, Any], code: int, says: str
) -> None:
    session_id = f"bad-{uuid.uuid4().hex[:8]}"
    response = await alice.post("/v1/sessions", json={"session_id": session_id, **body})
    assert response.status_code == code, response.text
    assert says in response.text
    assert (await alice.get(f"/v1/sessions/{session_id}")).status_code == 404


async def test_openapi_schema_is_complete(gateway: Gateway) -> None:
    schema = (await gateway.client().get("/openapi.json")).json()
    paths = schema["paths"]
    for path, method in [
        ("/v1/sessions", "post"),
        ("/v1/sessions", "get"),
        ("/v1/sessions/{session_id}", "get"),
        ("/v1/sessions/{session_id}", "delete"),
        ("/v1/sessions/{session_id}/messages", "post"),
        ("/v1/sessions/{session_id}/messages", "get"),
        ("/v1/sessions/{session_id}/messages/{message_id}", "get"),
        ("/healthz", "get"),
    ]:
        operation = paths[path][method]
        assert operation.get("description") or operation.get("summary"), (path, method)
    components = schema["components"]
    assert components["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for name in ("CreateSession", "PostMessage"):
        assert components["schemas"][name]["examples"], name
    post = paths["/v1/sessions/{session_id}/messages"]["post"]["responses"]
    assert {"200", "202", "401", "404", "413", "422", "429"} <= set(post)
