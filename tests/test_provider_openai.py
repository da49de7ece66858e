"""The OpenAI-compatible provider against a real llama.cpp server, and its error mapping."""

import json

import httpx
import pytest

from activities.providers.base import ProviderError, ProviderRequest
from activities.providers.openai_compat import OpenAICompatibleProvider
from workflows.messages import ContextMessage

API_KEY = "sk-test-9f8e7d6c5b4a3210"
SERVER_START_TIMEOUT = 60.0


def _request(
    content: str = "What is the capital of France?", max_tokens: int = 64
) -> ProviderRequest:
    return ProviderRequest(
        model="smollm2",
        messages=[
            ContextMessage(role="system", content="You are a helpful assistant."),
            ContextMessage(role="user", content=content),
        ],
        max_tokens=max_tokens,
    )


async def test_real_server_returns_content_and_usage(llama_server: str) -> None:
    provider = OpenAICompatibleProvider(base_url=llama_server + "/", api_key=None, timeout=60.0)
    try:
        reply = await provider.complete(_request(max_tokens=32))
    finally:
        await provider.aclose()
    assert reply.content.strip()
    assert reply.model == "smollm2"
    assert reply.usage.prompt_tokens > 0
    assert 0 < reply.usage.completion_tokens <= 32


async def test_real_server_context_overflow_is_a_final_400(llama_server: str) -> None:
    provider = OpenAICompatibleProvider(base_url=llama_server, api_key=API_KEY, timeout=60.0)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(_request("word " * 5000, max_tokens=8))
    finally:
        await provider.aclose()
    assert caught.value.status == 400
    assert not caught.value.retryable
    assert "context length" in caught.value.message


def _mocked(handler: httpx.MockTransport) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        base_url="https://llm.example.test/v1/", api_key=API_KEY, timeout=5.0, transport=handler
    )


def _error_body(message: str, kind: str = "invalid_request_error") -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


async def test_request_shape_and_auth() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(
            200,
            json={
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": None}}],
            },
        )

    provider = _mocked(httpx.MockTransport(handler))
    request = ProviderRequest(
        model="gpt-4o-mini",
        messages=[ContextMessage(role="user", content="hi")],
        max_tokens=16,
        temperature=0.3,
    )
    reply = await provider.complete(request)
    await provider.aclose()

    assert str(sent[0].url) == "https://llm.example.test/v1/chat/completions"
    assert sent[0].headers["authorization"] == f"Bearer {API_KEY}"
    assert json.loads(sent[0].content) == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 16,
        "temperature": 0.3,
        "stream": False,
    }
    assert reply.content == ""
    assert reply.model == "gpt-4o-mini-2024-07-18"
    assert reply.usage.total_tokens == 0


async def test_no_auth_header_without_a_key() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}}]})

    provider = OpenAICompatibleProvider(
        base_url="http://x.test/v1",
        api_key=None,
        timeout=5.0,
        transport=httpx.MockTransport(handler),
    )
    reply = await provider.complete(_request())
    await provider.aclose()
    assert "authorization" not in sent[0].headers
    assert (reply.content, reply.model) == ("ok", "smollm2")


async def _fail_with(transport: httpx.MockTransport) -> ProviderError:
    provider = _mocked(transport)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(_request())
    finally:
        await provider.aclose()
    assert API_KEY not in caught.value.message
    assert API_KEY not in str(caught.value)
    return caught.value


async def test_429_carries_retry_after() -> None:
    error = await _fail_with(
        httpx.MockTransport(
            lambda _: httpx.Response(
                429,
                headers={"retry-after": "7"},
                json=_error_body("Rate limit reached for requests", "requests"),
            )
        )
    )
    assert (error.status, error.retry_after, error.retryable) == (429, 7.0, True)


async def test_400_is_final_and_quotes_the_provider() -> None:
    error = await _fail_with(
        httpx.MockTransport(
            lambda _: httpx.Response(
                400, json=_error_body("'messages' must contain at least one entry " + "x" * 1000)
            )
        )
    )
    assert error.status == 400
    assert not error.retryable
    assert error.retry_after is None
    assert "'messages' must contain at least one entry" in error.message
    assert "400" in error.message
    assert len(error.message) < 400


async def test_key_echoed_by_the_provider_is_redacted() -> None:
    error = await _fail_with(
        httpx.MockTransport(
            lambda _: httpx.Response(
                401, json=_error_body(f"Incorrect API key provided: {API_KEY}.", "auth")
            )
        )
    )
    assert error.status == 401
    assert not error.retryable
    assert "Incorrect API key provided: [redacted]" in error.message


async def test_503_is_retryable_even_with_a_non_json_body() -> None:
    error = await _fail_with(
        httpx.MockTransport(lambda _: httpx.Response(503, text="upstream connect error"))
    )
    assert (error.status, error.retryable) == (503, True)
    assert "upstream connect error" in error.message


async def test_connection_error_has_no_status_and_is_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    error = await _fail_with(httpx.MockTransport(refuse))
    assert error.status is None
    assert error.retryable
    assert "ConnectError" in error.message


async def test_timeout_has_no_status_and_is_retryable() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    error = await _fail_with(httpx.MockTransport(slow))
    assert (error.status, error.retryable) == (None, True)


@pytest.mark.parametrize(
    "body", [{"object": "chat.completion"}, {"choices": []}, {"choices": [{"text": "legacy"}]}]
)
async def test_malformed_success_is_a_502(body: dict[str, object]) -> None:
    error = await _fail_with(httpx.MockTransport(lambda _: httpx.Response(200, json=body)))
    assert (error.status, error.retryable) == (502, True)
