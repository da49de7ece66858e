"""Fitting a turn's context into a model's window, in the model's tokens (issue 5)."""

from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.prompt_window import (
    CONTEXT_OVERFLOW,
    MESSAGE_OVERHEAD_TOKENS,
    TokenCounts,
    Window,
)
from activities.providers.scripted import ScriptedProvider
from common.model_windows import FALLBACK_CONTEXT, ModelWindow
from common.settings import Settings
from workflows.messages import ContextMessage, Role, ToolCall, Usage

WORDS = ScriptedProvider()  # counts a word as a token
OVERHEAD = MESSAGE_OVERHEAD_TOKENS


def words(n: int, seq: int, role: Role = "user", **extra: Any) -> ContextMessage:
    return ContextMessage(role=role, content=" ".join(["w"] * n), seq=seq, **extra)


def window(prompt: int) -> Window:
    return Window(context_tokens=prompt + 100, output_tokens=100)


async def test_system_prompt_then_the_newest_messages_that_fit() -> None:
    system = ContextMessage(role="system", content="be brief")  # 2 words
    history = [words(10, 1), words(10, 2, "assistant"), words(10, 3), words(10, 4, "assistant")]
    question = words(10, 5)
    budget = (2 + OVERHEAD) + 3 * (10 + OVERHEAD)  # the system prompt and three messages
    fitted = await TokenCounts().fit(
        "scripted/x", WORDS, [system, *history, question], window(budget)
    )
    assert [m.seq for m in fitted.messages] == [None, 3, 4, 5]
    assert fitted.tokens == budget
    assert fitted.from_seq == 3
    assert fitted.dropped_tokens == 2 * (10 + OVERHEAD)


async def test_a_tool_call_at_the_edge_goes_with_its_results_or_not_at_all() -> None:
    call = words(5, 2, "assistant", tool_calls=[ToolCall(id="c", name="calc", arguments="{}")])
    result = words(20, 3, "tool", tool_call_id="c")
    history = [words(5, 1), call, result, words(5, 4, "assistant"), words(5, 5)]
    call_tokens = 5 + 2 + OVERHEAD  # content + the call's name and arguments ("calc", "{}")
    tail = 2 * (5 + OVERHEAD)
    # Room for the result alone but not with its call: both are left out.
    fitted = await TokenCounts().fit("scripted/x", WORDS, history, window(tail + 20 + OVERHEAD))
    assert [m.seq for m in fitted.messages] == [4, 5]
    # Room for the pair: both come, and the question before them does not.
    pair = call_tokens + 20 + OVERHEAD
    fitted = await TokenCounts().fit("scripted/x", WORDS, history, window(tail + pair))
    assert [m.seq for m in fitted.messages] == [2, 3, 4, 5]
    assert fitted.dropped_tokens == 5 + OVERHEAD


async def test_a_newest_tool_round_too_large_fails_the_turn() -> None:
    call = words(5, 2, "assistant", tool_calls=[ToolCall(id="c", name="calc", arguments="{}")])
    history = [words(5, 1), call, words(500, 3, "tool", tool_call_id="c")]
    with pytest.raises(ApplicationError) as failed:
        await TokenCounts().fit("scripted/x", WORDS, history, window(300))
    assert "tool results" in failed.value.message


async def test_the_newest_message_too_large_fails_with_a_reason() -> None:
    system = ContextMessage(role="system", content=" ".join(["s"] * 50))
    with pytest.raises(ApplicationError) as failed:
        await TokenCounts().fit(
            "scripted/x", WORDS, [system, words(1, 1), words(200, 2)], window(200)
        )
    err = failed.value
    assert err.type == CONTEXT_OVERFLOW and err.non_retryable
    assert "The newest message is about 204 tokens, but scripted/x has room for 146" in err.message
    assert "54 are taken by the system prompt and summary" in err.message
    # Just fitting is fine: the message alone, nothing older.
    fitted = await TokenCounts().fit(
        "scripted/x", WORDS, [system, words(1, 1), words(142, 2)], window(200)
    )
    assert [m.seq for m in fitted.messages] == [None, 2]


async def test_estimates_learn_from_the_providers_usage() -> None:
    """Without a tokenizer: four characters a token, then scaled by what usage reported."""
    counts = TokenCounts()
    message = ContextMessage(role="user", content="x" * 400, seq=1)
    first = await counts.fit("openai/m", object(), [message], window(1000))
    assert first.tokens == 100 + OVERHEAD
    # The provider counted twice as many: the estimate moves towards that, within bounds.
    counts.learn("openai/m", object(), first, Usage(prompt_tokens=2 * first.tokens))
    assert counts.correction("openai/m") == pytest.approx(1.3)
    second = await counts.fit("openai/m", object(), [message], window(1000))
    assert second.tokens > first.tokens
    for _ in range(30):
        counts.learn("openai/m", object(), second, Usage(prompt_tokens=100 * second.tokens))
    assert counts.correction("openai/m") == pytest.approx(
        3.0, rel=1e-3
    )  # an absurd report is capped
    assert counts.correction("openai/other") == 1.0  # per model
    # A provider with its own tokenizer is never corrected.
    counts.learn("scripted/x", WORDS, first, Usage(prompt_tokens=5))
    assert counts.correction("scripted/x") == 1.0


def test_model_windows_come_from_settings_then_defaults() -> None:
    settings = Settings(
        local_context_tokens=4096,
        max_output_tokens=300,
        model_windows={
            "openai/*": ModelWindow(context_tokens=32_000),
            "openai/tiny-*": ModelWindow(context_tokens=2_048, output_tokens=128),
        },
    )
    assert settings.window_for("openai/tiny-1") == (2_048, 128)  # the longest pattern wins
    assert settings.window_for("openai/gpt-4o-mini") == (32_000, 300)
    assert settings.window_for("anthropic/claude-sonnet-4") == (200_000, 300)
    assert settings.window_for("local/smollm2") == (4096, 300)
    assert Settings().window_for("openai/gpt-4o-mini") == (128_000, 512)
    assert Settings().window_for("openai/some-local-server-model") == (FALLBACK_CONTEXT, 512)


def test_model_windows_parse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CHAT_MODEL_WINDOWS", '{"openai/m": {"context_tokens": 16384, "output_tokens": 1024}}'
    )
    assert Settings().window_for("openai/m") == (16_384, 1_024)
    monkeypatch.setenv("CHAT_MODEL_WINDOWS", '{"openai/m": {"context_tokens": 10}}')
    with pytest.raises(ValueError, match="context_tokens"):
        Settings()
