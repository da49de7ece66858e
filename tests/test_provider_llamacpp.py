"""The in-process llama.cpp provider with the real bundled SmolLM2 model."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from activities.providers.base import ProviderError, ProviderRequest
from activities.providers.llamacpp import LlamaCppProvider
from workflows.messages import ContextMessage

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
async def provider() -> AsyncIterator[LlamaCppProvider]:
    llm = LlamaCppProvider(model_path=None, n_ctx=1024, n_threads=None)
    yield llm
    await llm.aclose()


def _ask(question: str, max_tokens: int = 32) -> ProviderRequest:
    return ProviderRequest(
        model="smollm2",
        messages=[ContextMessage(role="user", content=question)],
        max_tokens=max_tokens,
    )


async def test_answers_a_short_question(provider: LlamaCppProvider) -> None:
    reply = await provider.complete(_ask("What is the capital of France?"))
    assert reply.content.strip()
    assert reply.model == "smollm2"
    assert reply.usage.prompt_tokens > 0
    assert 0 < reply.usage.completion_tokens <= 32


async def test_counts_tokens(provider: LlamaCppProvider) -> None:
    assert provider.count_tokens("hello world") > 0
    assert provider.count_tokens("hello world " * 10) > provider.count_tokens("hello world")


async def test_concurrent_calls_are_serialized_and_both_succeed(
    provider: LlamaCppProvider,
) -> None:
    first, second = await asyncio.gather(
        provider.complete(_ask("Name a colour.", max_tokens=16)),
        provider.complete(_ask("Name an animal.", max_tokens=16)),
    )
    for reply in (first, second):
        assert reply.content.strip()
        assert reply.usage.completion_tokens > 0


async def test_event_loop_keeps_running_during_generation(provider: LlamaCppProvider) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await provider.complete(_ask("Tell me about the sea.", max_tokens=48))
    finally:
        ticker.cancel()
    assert ticks > 0


async def test_prompt_longer_than_the_context_is_a_final_error() -> None:
    small = LlamaCppProvider(model_path=None, n_ctx=64, n_threads=None)
    try:
        with pytest.raises(ProviderError) as caught:
            await small.complete(_ask("word " * 200))
    finally:
        await small.aclose()
    assert caught.value.status == 400
    assert not caught.value.retryable


async def test_missing_model_file_is_a_worker_fault(tmp_path: Path) -> None:
    missing = LlamaCppProvider(model_path=tmp_path / "absent.gguf", n_ctx=64, n_threads=None)
    with pytest.raises(ProviderError) as caught:
        await missing.complete(_ask("hi"))
    await missing.aclose()
    assert caught.value.status == 503
