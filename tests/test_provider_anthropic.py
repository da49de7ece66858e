"""The Anthropic provider against hand-recorded Messages API responses."""

import json
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities.providers.anthropic import AnthropicProvider
from activities.providers.base import ProviderError, ProviderRequest
from workflows.messages import ContextMessage, Role

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
API_KEY = "sk-ant-test-0123456789abcdef"

Recorder = tuple[Callable[[str], AnthropicProvider], list[httpx.Request]]


@pytest.fixture
def recorded() -> Recorder:
    """Builds a provider whose transport answers with one recorded response."""
    sent: list[httpx.Request] = []

    def build(name: str) -> AnthropicProvider:
        recording = json.loads((FIXTURES / f"{name}.json").read_text())

        def handler(request: httpx.Request) -> httpx.Response:
            sent.append(request)
            return httpx.Response(
                recording["status"], headers=recording["headers"], json=recording["body"]
            )

        return AnthropicProvider(
            base_url="https://api.anthropic.test/",
            api_key=API_KEY,
            timeout=5.0,
            transport=httpx.MockTransport(handler),
        )

    return build, sent


def _request(*turns: tuple[Role, str], max_tokens: int = 256) -> ProviderRequest:
    return ProviderRequest(
        model="claude-3-5-haiku-20241022",
        messages=[ContextMessage(role=role, content=content) for role, content in turns],
        max_tokens=max_tokens,
    )


async def test_success_sends_a_well_formed_request_and_maps_the_reply(recorded: Recorder) -> None:
    build, sent = recorded
    provider = build("success")
    request = _request(
        ("system", "You are terse."),
        ("assistant", "Left over from a trimmed turn."),
        ("user", "What is Temporal?"),
        ("user", "Answer in two sentences."),
        ("system", "Never mention pricing."),
        ("assistant", "Sure."),
        ("assistant", "Go on?"),
        ("user", "Yes."),
    )
    reply = await provider.complete(request)
    await provider.aclose()

    assert len(sent) == 1
    http = sent[0]
    assert http.method == "POST"
    assert str(http.url) == "https://api.anthropic.test/v1/messages"
    assert http.headers["x-api-key"] == API_KEY
    assert http.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in http.headers
    body: dict[str, Any] = json.loads(http.content)
    assert body["model"] == "claude-3-5-haiku-20241022"
    assert body["max_tokens"] == 256
    assert body["system"] == "You are terse.\n\nNever mention pricing."
    assert "temperature" not in body
    assert body["messages"] == [
        {"role": "user", "content": "What is Temporal?\n\nAnswer in two sentences."},
        {"role": "assistant", "content": "Sure.\n\nGo on?"},
        {"role": "user", "content": "Yes."},
    ]
    roles = [m["role"] for m in body["messages"]]
    assert all(a != b for a, b in pairwise(roles))

    assert reply.content == (
        "Temporal records every step of a workflow in its event history."
        " If a worker crashes, another replays that history and carries on."
    )
    assert reply.model == "claude-3-5-haiku-20241022"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (42, 27)


async def test_system_is_omitted_when_there_is_none(recorded: Recorder) -> None:
    build, sent = recorded
    provider = build("success")
    await provider.complete(_request(("user", "hi")))
    await provider.aclose()
    body = json.loads(sent[0].content)
    assert "system" not in body
    assert body["messages"] == [{"role": "user", "content": "hi"}]


async def test_overloaded_529_is_retryable(recorded: Recorder) -> None:
    build, _ = recorded
    provider = build("overloaded")
    with pytest.raises(ProviderError) as caught:
        await provider.complete(_request(("user", "hi")))
    await provider.aclose()
    assert caught.value.status == 529
    assert caught.value.retryable
    assert "overloaded_error: Overloaded" in caught.value.message


async def test_invalid_request_400_is_final_and_explains_itself(recorded: Recorder) -> None:
    build, _ = recorded
    provider = build("invalid_request")
    with pytest.raises(ProviderError) as caught:
        await provider.complete(_request(("user", "hi"), max_tokens=9_000_000))
    await provider.aclose()
    error = caught.value
    assert error.status == 400
    assert not error.retryable
    assert error.retry_after is None
    assert "invalid_request_error" in error.message
    assert "maximum allowed number of output tokens" in error.message
    assert API_KEY not in error.message


async def test_rate_limit_carries_retry_after(recorded: Recorder) -> None:
    build, _ = recorded
    provider = build("rate_limited")
    with pytest.raises(ProviderError) as caught:
        await provider.complete(_request(("user", "hi")))
    await provider.aclose()
    assert (caught.value.status, caught.value.retry_after) == (429, 12.0)
    assert caught.value.retryable


async def test_only_system_and_assistant_messages_is_rejected_before_sending(
    recorded: Recorder,
) -> None:
    build, sent = recorded
    provider = build("success")
    with pytest.raises(ProviderError) as caught:
        await provider.complete(_request(("system", "s"), ("assistant", "a")))
    await provider.aclose()
    assert caught.value.status == 400
    assert sent == []


async def test_malformed_success_body_is_a_502() -> None:
    provider = AnthropicProvider(
        base_url="https://api.anthropic.test",
        api_key=API_KEY,
        timeout=5.0,
        transport=httpx.MockTransport(lambda _: httpx.Response(200, json={"type": "message"})),
    )
    with pytest.raises(ProviderError) as caught:
        await provider.complete(_request(("user", "hi")))
    await provider.aclose()
    assert caught.value.status == 502
