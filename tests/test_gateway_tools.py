"""The tool endpoints over HTTP, through a real gateway process and a real worker.

Both processes load `tests.tool_fixtures` (setting `CHAT_TOOL_MODULES`), so the test tools,
among them `send_note` (which needs approval), exist on both sides.
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from activities.providers.scripted import tool_script as script
from tests.processes import (
    Gateway,
    messages,
    new_session,
    poll_reply,
    serving,
    stack_env,
)

MAX_TOOLS = 4
APPROVAL_TIMEOUT = 600
BUILTIN_TOOLS = {"resolve_date", "calculate", "current_time"}
TEST_TOOLS = {"always_fails", "rendezvous", "send_note", "step", "big_output"}


@pytest.fixture(scope="module")
async def gateway(dev_env: WorkflowEnvironment) -> AsyncIterator[Gateway]:
    environ = stack_env(
        dev_env,
        f"tq-gwt-{uuid.uuid4().hex[:8]}",
        tool_modules=["tests.tool_fixtures"],
        max_tools_per_session=MAX_TOOLS,
        tool_approval_timeout_seconds=APPROVAL_TIMEOUT,
        reply_wait_seconds=2,
    )
    with serving(environ) as gw:
        yield gw
        await gw.close_clients()


async def status_of(client: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/sessions/{session_id}")
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


async def send_later(client: httpx.AsyncClient, session_id: str, content: str) -> str:
    """POST with `wait=false`; returns the reply URL."""
    response = await client.post(
        f"/v1/sessions/{session_id}/messages?wait=false", json={"content": content}
    )
    assert response.status_code == 202, response.text
    location: str = response.headers["Location"]
    return location


async def awaiting_approval(
    client: httpx.AsyncClient, session_id: str, seconds: float = 20
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + seconds
    status = await status_of(client, session_id)
    while asyncio.get_running_loop().time() < deadline:
        if status["status"] == "awaiting_approval":
            return status
        await asyncio.sleep(0.1)
        status = await status_of(client, session_id)
    raise AssertionError(f"the session never awaited approval: {status}")


async def listed_status(client: httpx.AsyncClient, session_id: str, wanted: str) -> bool:
    """Whether `GET /v1/sessions` shows the session in state `wanted` (visibility lags)."""
    seen = None
    for _ in range(100):
        response = await client.get("/v1/sessions")
        assert response.status_code == 200, response.text
        states = {s["session_id"]: s["status"] for s in response.json()["sessions"]}
        seen = states.get(session_id)
        if seen == wanted:
            return True
        await asyncio.sleep(0.1)
    raise AssertionError(f"the list shows {session_id} as {seen!r}, not {wanted!r}")


def decision_url(session_id: str, call_id: str) -> str:
    return f"/v1/sessions/{session_id}/tool-calls/{call_id}/decision"


@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_tool_endpoints_need_a_valid_key(gateway: Gateway, key: str | None) -> None:
    client = gateway.client(key=key)
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/v1/tools", None),
        ("PUT", "/v1/sessions/x/tools", {"tools": []}),
        ("POST", "/v1/sessions/x/tool-calls/c/decision", {"approve": True}),
    ]
    for method, path, body in requests:
        response = await client.request(method, path, json=body)
        assert response.status_code == 401, (method, path, response.text)
        assert "API key" in response.json()["detail"]


async def test_tools_are_listed_with_their_schemas(alice: httpx.AsyncClient) -> None:
    response = await alice.get("/v1/tools")
    assert response.status_code == 200, response.text
    tools = {t["name"]: t for t in response.json()["tools"]}

    assert set(tools) >= BUILTIN_TOOLS | TEST_TOOLS
    assert "http_fetch" not in tools  # exists only when allowed hosts are configured
    calculate = tools["calculate"]
    assert calculate["parameters"]["type"] == "object"
    assert "expression" in calculate["parameters"]["properties"]
    assert "expression" in calculate["parameters"]["required"]
    assert calculate["description"].startswith("Evaluate an arithmetic expression")
    assert "expression" in tools["resolve_date"]["parameters"]["properties"]
    note = tools["send_note"]
    assert note["needs_approval"] is True
    assert note["description"] == "Sends a note to the team."
    assert note["parameters"]["properties"]["text"]["type"] == "string"
    assert note["parameters"]["required"] == ["text"]
    meeting = tools["rendezvous"]["parameters"]["properties"]
    assert (meeting["size"]["minimum"], meeting["size"]["maximum"]) == (1, 10)
    needing_approval = {name for name, t in tools.items() if t["needs_approval"]}
    assert needing_approval == {"send_note"}


async def test_a_session_is_created_with_tools(alice: httpx.AsyncClient) -> None:
    created = await alice.post(
        "/v1/sessions", json={"tools": ["calculate", "send_note", "calculate"]}
    )
    assert created.json()["tools"] == ["calculate", "send_note"]  # de-duplicated, in order
    status = await status_of(alice, created.json()["session_id"])
    assert status["tools"] == ["calculate", "send_note"]
    assert status["pending_approvals"] == []
    assert (await status_of(alice, await new_session(alice)))["tools"] == []  # none unless asked


@pytest.mark.parametrize(
    ("tools", "says"),
    [
        (["calculate", "no_such_tool"], "unknown tools: no_such_tool;"),
        (["http_fetch"], "unknown tools: http_fetch;"),
        (["calculate", "send_note", "step", "rendezvous", "big_output"], "5 tools named"),
    ],
)
async def test_bad_tool_choices_create_nothing(
    alice: httpx.AsyncClient, tools: list[str], says: str
) -> None:
    session_id = f"badtools-{uuid.uuid4().hex[:8]}"
    response = await alice.post("/v1/sessions", json={"session_id": session_id, "tools": tools})
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"]
    assert (await alice.get(f"/v1/sessions/{session_id}")).status_code == 404


async def test_unknown_tool_message_lists_what_is_available(alice: httpx.AsyncClient) -> None:
    response = await alice.post("/v1/sessions", json={"tools": ["nope", "calculate", "nada"]})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("unknown tools: nope, nada;")
    assert "calculate" in detail.split("available:")[1]
    assert "send_note" in detail.split("available:")[1]


async def test_date_question_answered_through_the_date_tool(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice, tools=["resolve_date"])
    question = "What day of the week is July 4th, 2025?"
    call = ("resolve_date", {"expression": "July 4th, 2025"})
    response = await alice.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": question + " " + script([call]), "message_id": "q-1"},
    )
    assert response.status_code == 200, response.text
    reply = response.json()["reply"]
    assert reply["error"] is None
    assert reply["content"].startswith("echo: " + question)
    assert "Friday" in reply["content"]

    history = await messages(alice, session_id)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    user, asked, result, final = history
    assert user["id"] == "q-1"
    (tool_call,) = asked["tool_calls"]
    assert tool_call["name"] == "resolve_date"
    assert json.loads(tool_call["arguments"]) == {"expression": "July 4th, 2025"}
    assert tool_call["approval"] is None
    assert result["tool_call_id"] == tool_call["id"]
    assert result["tool_name"] == "resolve_date"
    assert not result["is_error"]
    assert "2025-07-04" in result["content"] and "Friday" in result["content"]
    assert final == reply
    assert final["reply_to"] == "q-1"
    assert (await status_of(alice, session_id))["turns"] == 1


async def test_tools_can_be_replaced(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice, tools=["calculate"])
    url = f"/v1/sessions/{session_id}/tools"

    changed = await alice.put(url, json={"tools": ["resolve_date", "send_note"]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["tools"] == ["resolve_date", "send_note"]
    assert changed.json()["session_id"] == session_id
    assert (await status_of(alice, session_id))["tools"] == ["resolve_date", "send_note"]

    refused = await alice.put(url, json={"tools": ["calculate", "bogus_tool"]})
    assert refused.status_code == 422, refused.text
    assert "bogus_tool" in refused.json()["detail"]
    too_many = await alice.put(
        url, json={"tools": ["calculate", "send_note", "step", "rendezvous", "big_output"]}
    )
    assert too_many.status_code == 422, too_many.text
    assert (await status_of(alice, session_id))["tools"] == ["resolve_date", "send_note"]

    # The next turn uses the new tools: calculate is no longer available.
    response = await alice.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": "sum " + script([("calculate", {"expression": "1+2"})])},
    )
    assert response.status_code == 200, response.text
    assert "'calculate' is not available in this session" in response.json()["reply"]["content"]

    cleared = await alice.put(url, json={"tools": []})
    assert cleared.status_code == 200 and cleared.json()["tools"] == []


async def test_changing_tools_of_other_or_closed_sessions(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    session_id = await new_session(alice, tools=["calculate"])
    response = await bob.put(f"/v1/sessions/{session_id}/tools", json={"tools": []})
    assert response.status_code == 404, response.text
    missing = await alice.put("/v1/sessions/never-made/tools", json={"tools": []})
    assert missing.status_code == 404, missing.text

    ended = await alice.delete(f"/v1/sessions/{session_id}")
    assert ended.status_code == 200 and ended.json()["status"] == "ended"
    closed = await alice.put(f"/v1/sessions/{session_id}/tools", json={"tools": []})
    assert closed.status_code == 409, closed.text
    assert "ended or expired" in closed.json()["detail"]
    assert (await status_of(alice, session_id))["tools"] == ["calculate"]

    # A message resumes the session with its tools; then they can be changed again.
    response = await alice.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": "sum " + script([("calculate", {"expression": "6*7"})])},
    )
    assert response.status_code == 200, response.text
    assert response.json()["reply"]["content"] == "echo: sum [tools: 42]"
    reopened = await alice.put(f"/v1/sessions/{session_id}/tools", json={"tools": []})
    assert reopened.status_code == 200, reopened.text
    assert (reopened.json()["tools"], reopened.json()["runs"]) == ([], 2)


async def test_approval_over_http(alice: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    session_id = await new_session(alice, tools=["send_note"])
    location = await send_later(
        alice, session_id, "note " + script([("send_note", {"text": "ship it"})])
    )
    message_id = location.rsplit("/", 1)[1]

    status = await awaiting_approval(alice, session_id)
    (pending,) = status["pending_approvals"]
    assert pending["name"] == "send_note"
    assert json.loads(pending["arguments"]) == {"text": "ship it"}
    assert pending["message_id"] == message_id
    assert pending["turn"] == 1
    waited = datetime.fromisoformat(pending["deadline"]) - datetime.fromisoformat(
        pending["requested_at"]
    )
    assert waited == timedelta(seconds=APPROVAL_TIMEOUT)
    call_id = pending["call_id"]
    assert await listed_status(alice, session_id, "awaiting_approval")
    waiting = await alice.get(location)
    assert waiting.status_code == 202, waiting.text
    assert waiting.json()["status"] == "awaiting_approval"
    asked = (await messages(alice, session_id))[1]
    assert asked["tool_calls"][0]["id"] == call_id
    assert asked["tool_calls"][0]["approval"] == "pending"

    # Bob can neither see nor decide Alice's call.
    assert (await bob.get(f"/v1/sessions/{session_id}")).status_code == 404
    by_bob = await bob.post(decision_url(session_id, call_id), json={"approve": True})
    assert by_bob.status_code == 404, by_bob.text
    assert (await status_of(alice, session_id))["status"] == "awaiting_approval"

    unknown = await alice.post(decision_url(session_id, "call-unknown"), json={"approve": True})
    assert unknown.status_code == 404, unknown.text
    assert "call-unknown" in unknown.json()["detail"]
    malformed = await alice.post(decision_url(session_id, call_id), json={"approve": "maybe"})
    assert malformed.status_code == 422, malformed.text

    approved = await alice.post(decision_url(session_id, call_id), json={"approve": True})
    assert approved.status_code == 200, approved.text
    assert approved.json()["id"] == call_id
    assert approved.json()["name"] == "send_note"
    assert approved.json()["approval"] == "approved"
    again = await alice.post(decision_url(session_id, call_id), json={"approve": True})
    assert again.status_code == 200 and again.json()["approval"] == "approved"
    reversed_ = await alice.post(
        decision_url(session_id, call_id), json={"approve": False, "reason": "changed my mind"}
    )
    assert reversed_.status_code == 409, reversed_.text
    assert "already approved" in reversed_.json()["detail"]

    reply = await poll_reply(alice, location)
    assert reply["reply"]["content"] == "echo: note [tools: sent: ship it]"
    status = await status_of(alice, session_id)
    assert (status["status"], status["pending_approvals"]) == ("active", [])
    assert await listed_status(alice, session_id, "active")
    history = await messages(alice, session_id)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[1]["tool_calls"][0]["approval"] == "approved"
    assert history[2]["tool_call_id"] == call_id
    assert history[2]["content"] == "sent: ship it" and not history[2]["is_error"]


async def test_denial_with_a_reason_is_told_to_the_model(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice, tools=["send_note", "calculate"])
    calls = [("send_note", {"text": "ship it"}), ("calculate", {"expression": "6*7"})]
    # Waiting for the reply outlasts the gateway's wait limit while the call awaits approval.
    response = await alice.post(
        f"/v1/sessions/{session_id}/messages", json={"content": "note " + script(calls)}
    )
    assert response.status_code == 202, response.text
    location = response.headers["Location"]

    status = await awaiting_approval(alice, session_id)
    (pending,) = status["pending_approvals"]  # calculate needs no approval
    assert pending["name"] == "send_note"
    denied = await alice.post(
        decision_url(session_id, pending["call_id"]),
        json={"approve": False, "reason": "not before the release"},
    )
    assert denied.status_code == 200, denied.text
    assert denied.json()["approval"] == "denied"
    assert denied.json()["decision_reason"] == "not before the release"
    approve_now = await alice.post(
        decision_url(session_id, pending["call_id"]), json={"approve": True}
    )
    assert approve_now.status_code == 409, approve_now.text
    assert "already denied" in approve_now.json()["detail"]

    reply = await poll_reply(alice, location)
    assert reply["reply"]["content"] == (
        "echo: note [tools: error: The user denied the call to 'send_note'; it did not run. "
        "Reason: not before the release | 42]"
    )
    history = await messages(alice, session_id)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [c["approval"] for c in history[1]["tool_calls"]] == ["denied", None]
    assert history[2]["is_error"] and "denied" in history[2]["content"]
    assert history[3]["content"] == "42" and not history[3]["is_error"]
    assert (await status_of(alice, session_id))["status"] == "active"


async def test_ending_the_session_denies_waiting_calls(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice, tools=["send_note"])
    location = await send_later(alice, session_id, "note " + script([("send_note", {"text": "x"})]))
    call_id = (await awaiting_approval(alice, session_id))["pending_approvals"][0]["call_id"]

    ended = await alice.delete(f"/v1/sessions/{session_id}")
    assert ended.status_code == 200, ended.text
    assert (ended.json()["status"], ended.json()["pending_approvals"]) == ("ended", [])
    reply = await poll_reply(alice, location)
    assert reply["reply"]["content"] == (
        "echo: note [tools: error: The user denied the call to 'send_note'; it did not run. "
        "Reason: The user ended the session.]"
    )
    history = await messages(alice, session_id)
    assert history[1]["tool_calls"][0]["approval"] == "denied"
    late = await alice.post(decision_url(session_id, call_id), json={"approve": True})
    assert late.status_code == 409, late.text


async def test_decisions_when_nothing_waits(alice: httpx.AsyncClient) -> None:
    session_id = await new_session(alice, tools=["calculate"])
    response = await alice.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": "sum " + script([("calculate", {"expression": "2+2"})])},
    )
    assert response.json()["reply"]["content"] == "echo: sum [tools: 4]"
    # A call that needed no approval is not one to decide.
    call_id = (await messages(alice, session_id))[1]["tool_calls"][0]["id"]
    response = await alice.post(decision_url(session_id, call_id), json={"approve": True})
    assert response.status_code == 404, response.text
    missing = await alice.post(decision_url("never-made", "c1"), json={"approve": True})
    assert missing.status_code == 404, missing.text


async def test_openapi_lists_the_tool_endpoints(gateway: Gateway) -> None:
    schema = (await gateway.client().get("/openapi.json")).json()
    paths = schema["paths"]
    for path, method in [
        ("/v1/tools", "get"),
        ("/v1/sessions/{session_id}/tools", "put"),
        ("/v1/sessions/{session_id}/tool-calls/{call_id}/decision", "post"),
    ]:
        operation = paths[path][method]
        assert operation.get("description") or operation.get("summary"), (path, method)
    decision = paths["/v1/sessions/{session_id}/tool-calls/{call_id}/decision"]["post"]
    assert "409" in decision["responses"]


async def test_a_session_terminated_while_awaiting_approval_is_listed_as_ended(
    alice: httpx.AsyncClient, dev_env: WorkflowEnvironment
) -> None:
    session_id = await new_session(alice, tools=["send_note"])
    await send_later(alice, session_id, "note " + script([("send_note", {"text": "x"})]))
    await awaiting_approval(alice, session_id)
    assert await listed_status(alice, session_id, "awaiting_approval")

    await dev_env.client.get_workflow_handle(f"chat:alice:{session_id}").terminate("operator")
    assert await listed_status(alice, session_id, "ended")
