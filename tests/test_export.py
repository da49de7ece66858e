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


@pytest.fixture(scope="module")
async def gateway(dev_env: WorkflowEnvironment) -> AsyncIterator[Gateway]:
    environ = stack_env(
        dev_env, f"tq-ex-{uuid.uuid4().hex[:8]}", max_turns_per_run=2, carry_max_chars=1_000
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
