"""Every provider streams its reply: the deltas rejoin into exactly what `stream` returns."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities.providers.anthropic import AnthropicProvider
from activities.providers.base import ProviderError, ProviderRequest
from activities.providers.llamacpp import LlamaCppProvider
from activities.providers.openai_compat import OpenAICompatibleProvider
from activities.providers.scripted import ScriptedProvider
from workflows.messages import ContextMessage, ToolCall, Usage

ANTHROPIC = Path(__file__).parent / "fixtures" / "anthropic"
API_KEY = "sk-test-9f8e7d6c5b4a3210"
EVENT_STREAM = {"content-type": "text/event-stream; charset=utf-8"}


class Deltas:
    """An `on_delta` that keeps each piece with the time it arrived."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.times: list[float] = []

    async def __call__(self, text: str) -> None:
        self.texts.append(text)
        self.times.append(time.monotonic())

    @property
    def joined(self) -> str:
        return "".join(self.texts)


def _ask(question: str, max_tokens: int = 64) -> ProviderRequest:
    return ProviderRequest(
        model="smollm2",
        messages=[ContextMessage(role="user", content=question)],
        max_tokens=max_tokens,
    )


# --- scripted ---------------------------------------------------------------------------------


async def test_scripted_streams_word_sized_deltas_that_rejoin_exactly() -> None:
    provider = ScriptedProvider()
    request = _ask("hello  there,   streaming world ")
    deltas = Deltas()
    reply = await provider.stream(request, deltas)
    assert reply == await provider.complete(request)
    assert deltas.texts == ["echo: ", "hello  ", "there,   ", "streaming ", "world"]
    assert deltas.joined == reply.content


async def test_scripted_tok_delay_spaces_the_deltas_out() -> None:
    deltas = Deltas()
    started = time.monotonic()
    reply = await ScriptedProvider().stream(_ask("[[tok_delay=0.05]] one two three"), deltas)
    assert reply.content == "echo: one two three"
    assert deltas.joined == reply.content
    assert len(deltas.texts) == 4
    assert deltas.times[0] - started >= 0.04
    assert all(later - earlier >= 0.04 for earlier, later in pairwise(deltas.times))


async def test_scripted_tool_step_streams_no_text_and_failures_match_complete() -> None:
    provider = ScriptedProvider()
    deltas = Deltas()
    script = '<<tools:[[{"name": "calculate", "arguments": {"expression": "2+2"}}]]>> sum'
    reply = await provider.stream(_ask(script), deltas)
    assert deltas.texts == []
    assert reply.content == ""
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [
        ("calculate", '{"expression": "2+2"}')
    ]
    with pytest.raises(ProviderError) as caught:
        await provider.stream(_ask("[[fail=503]] hi"), deltas)
    assert (caught.value.status, caught.value.retryable) == (503, True)
    assert deltas.texts == []


# --- OpenAI-compatible ------------------------------------------------------------------------


@pytest.mark.model
async def test_openai_streams_from_a_real_llama_server(llama_server: str) -> None:
    provider = OpenAICompatibleProvider(base_url=llama_server, api_key=None, timeout=60.0)
    deltas = Deltas()
    try:
        reply = await provider.stream(_ask("Tell me about the sea.", max_tokens=32), deltas)
    finally:
        await provider.aclose()
    assert len(deltas.texts) > 1
    assert deltas.joined == reply.content
    assert reply.content.strip()
    assert reply.model == "smollm2"
    assert reply.tool_calls == []


def _sse(*chunks: dict[str, Any] | str) -> bytes:
    return b"".join(
        f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks
    )


def _chunk(delta: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        **extra,
    }


def _openai(handler: Any) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        base_url="https://llm.example.test/v1",
        api_key=API_KEY,
        timeout=5.0,
        transport=httpx.MockTransport(handler),
    )


async def test_openai_stream_request_text_and_usage() -> None:
    sent: list[dict[str, Any]] = []
    usage = {"prompt_tokens": 14, "completion_tokens": 4}
    body = (
        _sse(_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Paris"}))
        + b": keep-alive\n\n"
        + _sse(
            _chunk({"content": " is the"}),
            _chunk({"content": " capital."}),
            {"model": "gpt-4o-mini-2024-07-18", "choices": [], "usage": usage},
            "[DONE]",
        )
    )

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, headers=EVENT_STREAM, content=body)

    provider = _openai(handler)
    deltas = Deltas()
    reply = await provider.stream(_ask("What is the capital of France?", max_tokens=16), deltas)
    await provider.aclose()
    assert sent[0]["stream"] is True
    assert sent[0]["stream_options"] == {"include_usage": True}
    assert deltas.texts == ["Paris", " is the", " capital."]
    assert reply.content == "Paris is the capital."
    assert reply.model == "gpt-4o-mini-2024-07-18"
    assert reply.usage == Usage(prompt_tokens=14, completion_tokens=4)


async def test_openai_stream_assembles_tool_calls_from_fragments() -> None:
    def call(index: int, **fields: Any) -> dict[str, Any]:
        return _chunk({"tool_calls": [{"index": index, **fields}]})

    body = _sse(
        _chunk({"role": "assistant", "content": None}),
        call(0, id="call_a", type="function", function={"name": "calculate", "arguments": ""}),
        call(0, function={"arguments": '{"expr'}),
        call(1, id="call_b", type="function", function={"name": "current_time"}),
        call(0, function={"arguments": 'ession": "2+2"}'}),
        "[DONE]",
    )
    provider = _openai(lambda _: httpx.Response(200, headers=EVENT_STREAM, content=body))
    deltas = Deltas()
    reply = await provider.stream(_ask("two things"), deltas)
    await provider.aclose()
    assert deltas.texts == []
    assert reply.content == ""
    assert reply.tool_calls == [
        ToolCall(id="call_a", name="calculate", arguments='{"expression": "2+2"}'),
        ToolCall(id="call_b", name="current_time", arguments="{}"),
    ]
    # No usage chunk (as from llama_cpp.server): an estimate, one token per fragment.
    assert reply.usage.completion_tokens == 4 and reply.usage.prompt_tokens >= 1


async def test_openai_http_error_before_the_stream_maps_as_complete_does() -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429,
            headers={"retry-after": "7"},
            json={"error": {"message": f"Rate limit reached for {API_KEY}", "type": "requests"}},
        )

    provider = _openai(handler)
    errors: list[ProviderError] = []
    for call in (provider.complete(_ask("hi")), provider.stream(_ask("hi"), Deltas())):
        with pytest.raises(ProviderError) as caught:
            await call
        errors.append(caught.value)
    await provider.aclose()
    completed, streamed = errors
    assert (streamed.status, streamed.retry_after, streamed.retryable) == (429, 7.0, True)
    assert streamed.message == completed.message
    assert API_KEY not in streamed.message


class _BreaksOff(httpx.AsyncByteStream):
    """A response body that delivers `head`, then loses the connection."""

    def __init__(self, head: bytes) -> None:
        self._head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._head
        raise httpx.RemoteProtocolError(f"peer closed connection ({API_KEY})")


@pytest.mark.parametrize("connection_lost", [True, False], ids=["connection-lost", "no-done"])
async def test_openai_stream_cut_off_midway_is_retryable_without_status(
    connection_lost: bool,
) -> None:
    head = _sse(_chunk({"content": "Paris"}), _chunk({"content": " is"}))

    def handler(_: httpx.Request) -> httpx.Response:
        if connection_lost:
            return httpx.Response(200, headers=EVENT_STREAM, stream=_BreaksOff(head))
        return httpx.Response(200, headers=EVENT_STREAM, content=head)

    provider = _openai(handler)
    deltas = Deltas()
    with pytest.raises(ProviderError) as caught:
        await provider.stream(_ask("hi"), deltas)
    await provider.aclose()
    assert deltas.texts == ["Paris", " is"]
    assert (caught.value.status, caught.value.retryable) == (None, True)
    assert API_KEY not in caught.value.message
    assert ("RemoteProtocolError" in caught.value.message) is connection_lost


async def test_openai_error_inside_the_stream_is_retryable() -> None:
    body = _sse(_chunk({"content": "Par"}), {"error": {"message": "boom", "type": "server_error"}})
    provider = _openai(lambda _: httpx.Response(200, headers=EVENT_STREAM, content=body))
    with pytest.raises(ProviderError) as caught:
        await provider.stream(_ask("hi"), Deltas())
    await provider.aclose()
    assert (caught.value.status, caught.value.retryable) == (None, True)
    assert "server_error: boom" in caught.value.message


# --- Anthropic --------------------------------------------------------------------------------


def _anthropic(body: bytes, sent: list[dict[str, Any]] | None = None) -> AnthropicProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        if sent is not None:
            sent.append(json.loads(request.content))
        return httpx.Response(200, headers=EVENT_STREAM, content=body)

    return AnthropicProvider(
        base_url="https://api.anthropic.test",
        api_key=API_KEY,
        timeout=5.0,
        transport=httpx.MockTransport(handler),
    )


def _recorded_reply(name: str) -> AnthropicProvider:
    """A provider answering with the non-streaming recording `name`.json."""
    recording = json.loads((ANTHROPIC / f"{name}.json").read_text())
    return AnthropicProvider(
        base_url="https://api.anthropic.test",
        api_key=API_KEY,
        timeout=5.0,
        transport=httpx.MockTransport(
            lambda _: httpx.Response(
                recording["status"], headers=recording["headers"], json=recording["body"]
            )
        ),
    )


@pytest.mark.parametrize(
    ("stream", "recording"), [("stream_text", "success"), ("stream_tool_use", "tool_use")]
)
async def test_anthropic_stream_returns_what_complete_returns(stream: str, recording: str) -> None:
    sent: list[dict[str, Any]] = []
    streaming = _anthropic((ANTHROPIC / f"{stream}.sse").read_bytes(), sent)
    deltas = Deltas()
    streamed = await streaming.stream(_ask("What is Temporal?"), deltas)
    await streaming.aclose()
    completing = _recorded_reply(recording)
    completed = await completing.complete(_ask("What is Temporal?"))
    await completing.aclose()

    assert sent[0]["stream"] is True
    assert len(deltas.texts) > 1
    assert deltas.joined == streamed.content
    assert streamed == completed


async def test_anthropic_tool_input_is_assembled_from_partial_json() -> None:
    provider = _anthropic((ANTHROPIC / "stream_tool_use.sse").read_bytes())
    deltas = Deltas()
    reply = await provider.stream(_ask("What day is July 4th, 2025?"), deltas)
    await provider.aclose()
    assert deltas.texts == ["Let me check", " the calendar."]
    assert reply.tool_calls == [
        ToolCall(
            id="toolu_01A09q90qw90lq917835lq9",
            name="resolve_date",
            arguments='{"expression": "July 4th, 2025"}',
        )
    ]
    assert reply.usage == Usage(prompt_tokens=384, completion_tokens=61)


async def test_anthropic_overloaded_error_event_is_retryable() -> None:
    provider = _anthropic((ANTHROPIC / "stream_overloaded.sse").read_bytes())
    deltas = Deltas()
    with pytest.raises(ProviderError) as caught:
        await provider.stream(_ask("What is Temporal?"), deltas)
    await provider.aclose()
    assert deltas.texts == ["Temporal records"]
    assert (caught.value.status, caught.value.retryable) == (529, True)
    assert "overloaded_error: Overloaded" in caught.value.message


async def test_anthropic_http_error_before_the_stream_maps_as_complete_does() -> None:
    provider = _recorded_reply("rate_limited")
    with pytest.raises(ProviderError) as completed:
        await provider.complete(_ask("hi"))
    with pytest.raises(ProviderError) as streamed:
        await provider.stream(_ask("hi"), Deltas())
    await provider.aclose()
    assert (streamed.value.status, streamed.value.retry_after) == (429, 12.0)
    assert streamed.value.message == completed.value.message


async def test_anthropic_stream_without_message_stop_is_retryable_without_status() -> None:
    whole = (ANTHROPIC / "stream_text.sse").read_bytes()
    provider = _anthropic(whole[: whole.index(b"event: content_block_stop")])
    deltas = Deltas()
    with pytest.raises(ProviderError) as caught:
        await provider.stream(_ask("What is Temporal?"), deltas)
    await provider.aclose()
    assert len(deltas.texts) == 6
    assert (caught.value.status, caught.value.retryable) == (None, True)


# --- llama.cpp in process ---------------------------------------------------------------------


@pytest.fixture(scope="module")
async def local() -> AsyncIterator[LlamaCppProvider]:
    llm = LlamaCppProvider(model_path=None, n_ctx=1024, n_threads=None)
    yield llm
    await llm.aclose()


@pytest.mark.model
async def test_local_model_streams_while_the_event_loop_keeps_running(
    local: LlamaCppProvider,
) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticks_at_delta: list[int] = []
    deltas = Deltas()

    async def on_delta(text: str) -> None:
        ticks_at_delta.append(ticks)
        await deltas(text)

    ticker = asyncio.create_task(tick())
    try:
        reply = await local.stream(_ask("Tell me about the sea.", max_tokens=48), on_delta)
        ended = time.monotonic()
    finally:
        ticker.cancel()
    assert len(deltas.texts) > 1
    assert deltas.joined == reply.content
    assert reply.content.strip()
    assert reply.model == "smollm2"
    assert reply.usage.prompt_tokens > 0
    assert 0 < reply.usage.completion_tokens <= 48
    # The first piece arrived while the model was still generating the rest...
    assert deltas.times[0] < deltas.times[-1] <= ended
    # ...and the loop went on running between pieces, not only before and after.
    assert ticks_at_delta[-1] > ticks_at_delta[0]


@pytest.mark.model
async def test_local_stream_and_complete_take_turns(local: LlamaCppProvider) -> None:
    deltas = Deltas()
    streamed, completed = await asyncio.gather(
        local.stream(_ask("Name a colour.", max_tokens=16), deltas),
        local.complete(_ask("Name an animal.", max_tokens=16)),
    )
    assert deltas.joined == streamed.content
    assert streamed.content.strip()
    assert completed.content.strip()


@pytest.mark.model
async def test_local_stream_stops_when_its_caller_leaves(local: LlamaCppProvider) -> None:
    first = asyncio.Event()

    async def on_delta(_: str) -> None:
        first.set()

    streaming = asyncio.create_task(local.stream(_ask("Write a long story.", 900), on_delta))
    await first.wait()
    streaming.cancel()
    with pytest.raises(asyncio.CancelledError):
        await streaming
    # The abandoned generation stops at its next token, so the model is free again soon.
    started = time.monotonic()
    reply = await local.complete(_ask("hi", max_tokens=4))
    assert reply.content
    assert time.monotonic() - started < 5


@pytest.mark.model
async def test_local_prompt_longer_than_the_context_is_a_final_error() -> None:
    small = LlamaCppProvider(model_path=None, n_ctx=64, n_threads=None)
    deltas = Deltas()
    try:
        with pytest.raises(ProviderError) as caught:
            await small.stream(_ask("word " * 200), deltas)
    finally:
        await small.aclose()
    assert (caught.value.status, caught.value.retryable) == (400, False)
    assert deltas.texts == []


async def test_local_missing_model_file_is_a_worker_fault(tmp_path: Path) -> None:
    missing = LlamaCppProvider(model_path=tmp_path / "absent.gguf", n_ctx=64, n_threads=None)
    with pytest.raises(ProviderError) as caught:
        await missing.stream(_ask("hi"), Deltas())
    await missing.aclose()
    assert caught.value.status == 503
