"""Tool calls through both provider mappings: one internal form, OpenAI and Anthropic wire forms."""

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from activities.providers.anthropic import AnthropicProvider, to_anthropic_messages
from activities.providers.base import ProviderRequest
from activities.providers.openai_compat import OpenAICompatibleProvider
from tests.processes import free_port
from tools import ToolContext
from tools.builtin import builtin_registry
from workflows.messages import ContextMessage, ToolCall

QUESTION = "What day of the week is July 4th, 2025?"


class ToolCallingPeer:
    """An OpenAI-compatible HTTP peer: asks for `resolve_date`, then answers from the result."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.complete)

    async def complete(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        self.requests.append(body)
        results = [m for m in body["messages"] if m["role"] == "tool"]
        if not results:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "resolve_date",
                            "arguments": json.dumps({"expression": "July 4th, 2025"}),
                        },
                    }
                ],
            }
        else:
            weekday = json.loads(results[-1]["content"])["weekday"]
            message = {"role": "assistant", "content": f"July 4th, 2025 is a {weekday}."}
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
        }


@pytest.fixture(scope="module")
def peer() -> Iterator[tuple[ToolCallingPeer, str]]:
    server_peer = ToolCallingPeer()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(server_peer.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        threading.Event().wait(0.05)
    yield server_peer, f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=5)


async def test_openai_tool_round_trip_over_http(peer: tuple[ToolCallingPeer, str]) -> None:
    server, base_url = peer
    registry = builtin_registry()
    provider = OpenAICompatibleProvider(base_url=base_url, api_key=None, timeout=10)
    messages = [ContextMessage(role="user", content=QUESTION)]
    request = ProviderRequest(model="m", messages=messages, tools=list(registry.definitions()))

    first = await provider.complete(request)
    assert first.content == ""
    assert first.tool_calls == [
        ToolCall(id="call_1", name="resolve_date", arguments='{"expression": "July 4th, 2025"}')
    ]
    sent_tools = {t["function"]["name"]: t for t in server.requests[0]["tools"]}
    assert sent_tools["resolve_date"]["type"] == "function"
    assert "expression" in sent_tools["resolve_date"]["function"]["parameters"]["properties"]

    call = first.tool_calls[0]
    result = await registry.call(
        call.name, call.arguments, ToolContext(session_id="s", turn=1, call_id=call.id)
    )
    assert result.ok, result.content
    messages += [
        ContextMessage(role="assistant", content="", tool_calls=first.tool_calls),
        ContextMessage(role="tool", content=result.content, tool_call_id=call.id),
    ]
    second = await provider.complete(ProviderRequest(model="m", messages=messages))
    assert second.content == "July 4th, 2025 is a Friday."
    assert second.tool_calls == []
    assistant, tool = server.requests[1]["messages"][1:]
    assert assistant["content"] is None
    assert assistant["tool_calls"][0]["function"]["name"] == "resolve_date"
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": result.content}
    await provider.aclose()


FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"


async def test_anthropic_tool_use_maps_to_the_internal_form() -> None:
    recorded = json.loads((FIXTURES / "tool_use.json").read_text())
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(recorded["status"], json=recorded["body"])

    provider = AnthropicProvider(
        base_url="http://anthropic.test",
        api_key="k",
        timeout=5,
        transport=httpx.MockTransport(handler),
    )
    registry = builtin_registry()
    reply = await provider.complete(
        ProviderRequest(
            model="claude",
            messages=[ContextMessage(role="user", content=QUESTION)],
            tools=list(registry.definitions()),
        )
    )
    assert reply.content == "Let me check the calendar."
    assert reply.tool_calls == [
        ToolCall(
            id="toolu_01A09q90qw90lq917835lq9",
            name="resolve_date",
            arguments='{"expression": "July 4th, 2025"}',
        )
    ]
    tools = {t["name"]: t for t in sent[0]["tools"]}
    assert tools["resolve_date"]["input_schema"]["required"] == ["expression"]
    await provider.aclose()


def test_anthropic_request_keeps_each_call_with_its_result() -> None:
    calls = [
        ToolCall(id="a", name="calculate", arguments='{"expression": "2+2"}'),
        ToolCall(id="b", name="current_time", arguments="{}"),
    ]
    system, turns = to_anthropic_messages(
        [
            ContextMessage(role="system", content="be brief"),
            ContextMessage(role="user", content="two things"),
            ContextMessage(role="assistant", content="on it", tool_calls=calls),
            ContextMessage(role="tool", content="4", tool_call_id="a"),
            ContextMessage(role="tool", content="boom", tool_call_id="b", is_error=True),
            ContextMessage(role="assistant", content="done"),
        ]
    )
    assert system == "be brief"
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[1]["content"] == [
        {"type": "text", "text": "on it"},
        {"type": "tool_use", "id": "a", "name": "calculate", "input": {"expression": "2+2"}},
        {"type": "tool_use", "id": "b", "name": "current_time", "input": {}},
    ]
    # Both results go back in the one user turn that follows the calls.
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "a", "content": "4", "is_error": False},
        {"type": "tool_result", "tool_use_id": "b", "content": "boom", "is_error": True},
    ]
    assert turns[0]["content"] == "two things"
    assert turns[3]["content"] == "done"


def test_a_result_whose_call_was_trimmed_away_is_dropped() -> None:
    _, turns = to_anthropic_messages(
        [
            ContextMessage(role="tool", content="orphan", tool_call_id="gone"),
            ContextMessage(role="user", content="hi"),
        ]
    )
    assert turns == [{"role": "user", "content": "hi"}]
