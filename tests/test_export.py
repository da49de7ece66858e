"""Export (JSON and Markdown) and fork over HTTP, with real gateway and worker processes on the
dev server; runs are kept short so the conversation spans several of them."""

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from tests.processes import Gateway, new_session, serving, stack_env

IMPORT_LIMIT = 600_000  # above the API's own 256 KB body limit, below what a test sends
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
async def gateway(dev_env: WorkflowEnvironment) -> AsyncIterator[Gateway]:
    environ = stack_env(
        dev_env,
        f"tq-ex-{uuid.uuid4().hex[:8]}",
        max_turns_per_run=2,
        carry_max_chars=1_000,
        max_import_bytes=IMPORT_LIMIT,
    )
    with serving(environ) as gw:
        yield gw
        await gw.close_clients()


async def messages(client: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    """Every message, following `next` (a page ends where a run's messages end)."""
    found: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        response = await client.get(
            f"/v1/sessions/{session_id}/messages", params={"after": after, "limit": 500}
        )
        assert response.status_code == 200, response.text
        found += response.json()["messages"]
        after = response.json()["next"]
    return found


async def say(client: httpx.AsyncClient, session_id: str, content: str) -> Any:
    response = await client.post(f"/v1/sessions/{session_id}/messages", json={"content": content})
    assert response.status_code == 200, response.text
    return response.json()["reply"]


async def test_export_reads_every_run_as_json_and_markdown(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice, system_prompt="Be brief.")
    texts = [f"message {i} " + "k" * 400 for i in range(5)]
    for text in texts:
        await say(alice, session_id, text)
    response = await alice.get(f"/v1/sessions/{session_id}/export")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    document = json.loads(response.content)
    assert (document["format"], document["version"]) == ("durable-chat-session", 1)
    assert document["session"]["system_prompt"] == "Be brief."
    assert [m["content"] for m in document["messages"] if m["role"] == "user"] == texts
    assert document["messages"] == await messages(alice, session_id)
    assert [m["seq"] for m in document["messages"]] == list(range(1, 11))
    markdown = (await alice.get(f"/v1/sessions/{session_id}/export?format=markdown")).text
    assert markdown.startswith(f"# Session {session_id}")
    for text in texts:
        assert text in markdown and f"echo: {text}" in markdown


async def test_fork_takes_the_prefix_and_goes_its_own_way(alice: httpx.AsyncClient) -> None:
    source = await new_session(alice)
    for i in range(4):
        await say(alice, source, f"turn {i}")
    before = await messages(alice, source)
    response = await alice.post(f"/v1/sessions/{source}/fork", json={"upto_seq": 3})
    assert response.status_code == 201, response.text
    fork = response.json()["session_id"]
    forked = await messages(alice, fork)
    assert forked == before[:4]  # message 3 is turn 2's question: the fork takes its reply
    reply = await say(alice, fork, "a different turn 3")
    assert reply["content"] == "echo: a different turn 3" and reply["turn"] == 3
    assert await messages(alice, source) == before
    status = (await alice.get(f"/v1/sessions/{fork}")).json()
    assert (status["turns"], status["messages"]) == (3, 6)


async def test_other_users_and_bad_requests(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    session_id = await new_session(alice)
    await say(alice, session_id, "mine")
    assert (await bob.get(f"/v1/sessions/{session_id}/export")).status_code == 404
    refused = await bob.post(f"/v1/sessions/{session_id}/fork", json={"upto_seq": 1})
    assert refused.status_code == 404
    beyond = await alice.post(f"/v1/sessions/{session_id}/fork", json={"upto_seq": 99})
    assert beyond.status_code == 404 and "99" in beyond.json()["detail"]
    assert (await alice.post(f"/v1/sessions/{session_id}/fork", json={})).status_code == 422
    assert (await alice.get(f"/v1/sessions/{session_id}/export?format=pdf")).status_code == 422


async def export_of(client: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/sessions/{session_id}/export")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = json.loads(response.content)
    return document


async def test_an_export_imports_as_a_new_session_that_reads_the_same(
    alice: httpx.AsyncClient,
) -> None:
    source = await new_session(alice, system_prompt="Be brief.")
    for i in range(5):
        await say(alice, source, f"message {i} " + "i" * 300)
    document = await export_of(alice, source)
    response = await alice.post("/v1/imports", json=document)
    assert response.status_code == 201, response.text
    copy = response.json()["session_id"]
    assert copy != source and response.json()["system_prompt"] == "Be brief."
    assert await messages(alice, copy) == document["messages"]
    status = (await alice.get(f"/v1/sessions/{copy}")).json()
    assert (status["turns"], status["messages"]) == (5, 10)
    assert status["usage"] == document["usage"]
    reply = await say(alice, copy, "and on")
    assert (reply["content"], reply["turn"], reply["seq"]) == ("echo: and on", 6, 12)
    again = await export_of(alice, copy)
    assert again["messages"][:10] == document["messages"]
    assert await messages(alice, source) == document["messages"]  # the source is untouched


async def test_an_import_has_its_own_body_limit(alice: httpx.AsyncClient) -> None:
    """A whole session is more than one request's 256 KB: the import takes up to its own
    limit (600 KB here), and past it is refused with 413 before anything is stored."""
    source = await new_session(alice)
    for i in range(3):
        await say(alice, source, f"big {i} " + "b" * 15_000)
    document = await export_of(alice, source)
    document["messages"] = copies(document["messages"], 3)  # 18 messages, about 280 KB
    body = json.dumps(document)
    assert 256 * 1024 < len(body) < IMPORT_LIMIT
    accepted = await alice.post("/v1/imports", content=body, headers=JSON)
    assert accepted.status_code == 201, accepted.text[:300]
    assert len(await messages(alice, accepted.json()["session_id"])) == 18
    padded = {**document, "summary": None, "exported_at": None}
    padded["session"] = {**document["session"], "system_prompt": None}
    padded["messages"] = copies(document["messages"][:6], 6)  # about 560 KB
    padded["messages"] += padded["messages"][:6]  # a duplicate: never checked, too large
    refused = await alice.post(
        "/v1/imports",
        params={"session_id": "too-big"},
        content=json.dumps(padded),
        headers=JSON,
    )
    assert refused.status_code == 413 and str(IMPORT_LIMIT) in refused.json()["detail"]
    assert (await alice.get("/v1/sessions/too-big")).status_code == 404


async def test_a_bad_import_says_what_is_wrong_and_stores_nothing(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    source = await new_session(alice)
    for i in range(2):
        await say(alice, source, f"turn {i}")
    good = await export_of(alice, source)
    first, reply, second, second_reply = good["messages"]

    def with_messages(*items: dict[str, Any]) -> dict[str, Any]:
        return {**good, "messages": list(items)}

    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**good, "format": "other"}, 422, "format"),
        ({**good, "version": 2}, 422, "version"),
        (with_messages(first, reply, {**second, "seq": 4}), 422, "seqs must run"),
        (with_messages(first, reply, {**second, "id": first["id"]}, second_reply), 422, "twice"),
        (with_messages(first, {**reply, "reply_to": "nobody"}), 422, "reply_to 'nobody'"),
        (with_messages({**first, "id": "has spaces"}), 422, "id must match"),
        (with_messages(first, reply, {**second, "turn": 0}), 422, "comes after turn"),
        ({**good, "session": {**good["session"], "tools": ["no_such_tool"]}}, 422, "unknown"),
        ({**good, "session": {**good["session"], "model": "nope/x"}}, 422, "provider"),
        ({**good, "summary": {**_summary(), "upto_seq": 9}}, 422, "summary.upto_seq"),
        ({**good, "messages": [{"seq": 1}]}, 422, "role"),
    ]
    for index, (document, code, words) in enumerate(cases):
        new_id = f"bad-import-{index}"
        response = await alice.post("/v1/imports", params={"session_id": new_id}, json=document)
        assert response.status_code == code, (index, response.text[:300])
        assert words in response.text, (index, response.text[:300])
        assert (await alice.get(f"/v1/sessions/{new_id}")).status_code == 404
    # An id the caller already uses is a conflict; another user's same id is their own.
    taken = await alice.post("/v1/imports", params={"session_id": source}, json=good)
    assert taken.status_code == 409
    mine = await bob.post("/v1/imports", params={"session_id": source}, json=good)
    assert mine.status_code == 201, mine.text
    assert await messages(bob, source) == good["messages"]
    assert await messages(alice, source) == good["messages"]
    assert (
        await bob.post("/v1/imports", json=good, headers={"Authorization": ""})
    ).status_code == 401


def copies(conversation: list[dict[str, Any]], times: int) -> list[dict[str, Any]]:
    """The conversation `times` over, renumbered and with fresh ids, as one longer one."""
    out: list[dict[str, Any]] = []
    for n in range(times):
        for m in conversation:
            fresh = {**m, "seq": len(out) + 1, "turn": m["turn"] + n * 100}
            if m["role"] == "user":
                fresh["id"] = f"{m['id']}-{n}"
            if m.get("reply_to"):
                fresh["reply_to"] = f"{m['reply_to']}-{n}"
            out.append(fresh)
    return out


def _summary() -> dict[str, Any]:
    return {"text": "s", "upto_seq": 1, "created_at": "2026-11-22T00:00:00Z"}
