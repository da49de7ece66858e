"""The one interface every model provider implements, and the error it raises."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from workflows.messages import ContextMessage, ToolCall, ToolSpec, Usage

RETRYABLE_STATUS = frozenset({408, 409, 429})

OnDelta = Callable[[str], Awaitable[None]]
"""Receives each piece of reply text as the provider produces it, in order."""


@dataclass(frozen=True)
class ProviderRequest:
    model: str
    """The provider's own model name (the part after `provider/`)."""
    messages: list[ContextMessage]
    max_tokens: int = 512
    temperature: float | None = None
    tools: list[ToolSpec] = field(default_factory=list)


@dataclass(frozen=True)
class ProviderReply:
    content: str
    model: str
    usage: Usage = field(default_factory=Usage)
    tool_calls: list[ToolCall] = field(default_factory=list)


class ProviderError(Exception):
    """A provider call failed. `status` is the HTTP status where there was one.

    Providers only describe what happened; whether to retry is decided once, in the activity.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        if self.status is None:  # connection errors, timeouts, broken streams
            return True
        return self.status in RETRYABLE_STATUS or self.status >= 500


class ChatProvider(Protocol):
    async def complete(self, request: ProviderRequest) -> ProviderReply: ...

    async def stream(self, request: ProviderRequest, on_delta: OnDelta) -> ProviderReply:
        """Like `complete`, but hands each piece of text to `on_delta` as it is generated.

        Returns what `complete` would: `content` is exactly the concatenation of the deltas.
        Errors follow `complete`'s rules; a stream that breaks after it started is a
        ProviderError with no status (retryable), since the reply is incomplete, not refused.
        """
        ...

    async def aclose(self) -> None: ...


CHARS_PER_TOKEN = 4
"""The usual rule of thumb for English text; used only where a provider reports no counts."""


def estimate_prompt_tokens(messages: list[ContextMessage]) -> int:
    """A documented estimate for servers that stream without usage (llama_cpp.server ignores
    `stream_options`): about four characters per token, at least one per message."""
    chars = sum(
        len(m.content) + sum(len(c.name) + len(c.arguments) for c in m.tool_calls) for m in messages
    )
    return max(chars // CHARS_PER_TOKEN, len(messages))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; HTTP dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
