"""Fits a turn's context into the model's window, counted in the model's tokens.

A provider that can count its own tokens (llama.cpp for the local model, the scripted test
model) is asked directly. For the rest the count is an estimate: four characters per token
plus a few tokens per message for the chat template, scaled by what the provider's own
usage numbers said about earlier prompts of the same model on this worker.
"""

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar, runtime_checkable

from temporalio.exceptions import ApplicationError

from activities.providers.base import CHARS_PER_TOKEN
from workflows.context import split_context, split_head
from workflows.messages import ContextMessage, Usage

_T = TypeVar("_T")
CONTEXT_OVERFLOW = "ContextOverflow"
MESSAGE_OVERHEAD_TOKENS = 4
"""Role markers and separators a chat template adds around each message."""
READ_CHARS_PER_TOKEN = 8
"""Characters read per prompt token: more than any tokenizer packs into one, so the messages
read always cover the window."""
CORRECTION_BOUNDS = (0.5, 3.0)
CORRECTION_WEIGHT = 0.3  # of the newest observation in the running correction
COUNT_MEMO_TEXTS = 50_000  # texts whose token counts a worker remembers, per model


@runtime_checkable
class CountsTokens(Protocol):
    """A provider with the model's own tokenizer."""

    tokenizer_blocks: bool
    """True when counting may block (llama.cpp loads the model): it then runs in a thread."""

    def count_tokens(self, text: str) -> int: ...


async def counted(provider: CountsTokens, fit: Callable[..., _T], *args: Any) -> _T:
    """`fit(*args)`, off the event loop when the provider's tokenizer may block."""
    if provider.tokenizer_blocks:
        return await asyncio.to_thread(fit, *args)
    return fit(*args)


@dataclass(frozen=True)
class Window:
    context_tokens: int
    output_tokens: int

    @property
    def prompt_budget(self) -> int:
        return max(self.context_tokens - self.output_tokens, 0)

    @property
    def read_chars(self) -> int:
        return self.prompt_budget * READ_CHARS_PER_TOKEN


@dataclass(frozen=True)
class FittedPrompt:
    messages: list[ContextMessage]
    tokens: int
    dropped_tokens: int
    from_seq: int | None
    scale: float = 1.0
    """The estimate's correction when this was counted (1: counted by the model's tokenizer)."""


class TokenCounts:
    """Per worker: counts tokens for a model, and learns how far the estimate is off."""

    def __init__(self) -> None:
        self._correction: dict[str, float] = {}
        self._counted: dict[str, OrderedDict[str, int]] = {}

    def _remembered(self, model: str, count: Callable[[str], int]) -> Callable[[str], int]:
        """`count`, remembering recent texts' counts: a session's messages are counted once,
        not on every turn that sends them again."""
        memo = self._counted.setdefault(model, OrderedDict())

        def counted(text: str) -> int:
            known = memo.get(text)
            if known is None:
                known = memo[text] = count(text)
                if len(memo) > COUNT_MEMO_TEXTS:
                    memo.popitem(last=False)
            return known

        return counted

    async def fit(
        self, model: str, provider: object, context: list[ContextMessage], window: Window
    ) -> FittedPrompt:
        """The leading system messages, then the newest messages that fit the prompt budget.

        Raises a non-retryable ContextOverflow when even the newest message (or tool round)
        does not fit: sending it cut, or without it, would answer something else.
        """
        if isinstance(provider, CountsTokens):
            count = self._remembered(model, provider.count_tokens)
            return await counted(provider, _fit, context, window, model, count)
        scale = self._correction.get(model, 1.0)
        fitted = _fit(context, window, model, lambda text: estimate_tokens(text, scale))
        return replace(fitted, scale=scale)

    def learn(self, model: str, provider: object, prompt: FittedPrompt, usage: Usage) -> None:
        """Fold the provider's count of a prompt into the estimate for this model."""
        if isinstance(provider, CountsTokens) or usage.prompt_tokens <= 0 or prompt.tokens <= 0:
            return
        scale = self._correction.get(model, 1.0)
        unscaled = prompt.tokens / prompt.scale
        low, high = CORRECTION_BOUNDS
        observed = min(max(usage.prompt_tokens / unscaled, low), high)
        self._correction[model] = (1 - CORRECTION_WEIGHT) * scale + CORRECTION_WEIGHT * observed

    def correction(self, model: str) -> float:
        return self._correction.get(model, 1.0)


def estimate_tokens(text: str, scale: float = 1.0) -> int:
    """Four characters a token, times what usage taught about this model."""
    return round(len(text) / CHARS_PER_TOKEN * scale)


def _fit(
    context: list[ContextMessage], window: Window, model: str, count: Callable[[str], int]
) -> FittedPrompt:
    def cost(message: ContextMessage) -> int:
        calls = sum(count(c.name) + count(c.arguments) for c in message.tool_calls)
        return count(message.content) + calls + MESSAGE_OVERHEAD_TOKENS

    head, body = split_head(context)
    head_tokens = sum(cost(m) for m in head)
    budget = window.prompt_budget - head_tokens
    split = split_context(body, budget, cost)
    if split.kept_cost > budget:  # only ever the newest message (or tool round), kept alone
        raise _overflow(model, window, head_tokens, split.kept_cost, body)
    return FittedPrompt(
        messages=[*head, *split.kept],
        tokens=head_tokens + split.kept_cost,
        dropped_tokens=split.dropped_cost,
        from_seq=split.kept[0].seq if split.kept else None,
    )


def _overflow(
    model: str, window: Window, head: int, newest: int, body: list[ContextMessage]
) -> ApplicationError:
    what = "tool results" if body and body[-1].role == "tool" else "newest message"
    room = window.prompt_budget - head
    message = (
        f"The {what} is about {newest} tokens, but {model} has room for {max(room, 0)}: "
        f"its context is {window.context_tokens} tokens, {window.output_tokens} are kept for "
        f"the reply"
        + (f" and {head} are taken by the system prompt and summary" if head else "")
        + ". Send a shorter message or use a model with a larger context."
    )
    return ApplicationError(message, type=CONTEXT_OVERFLOW, non_retryable=True)
