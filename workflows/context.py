"""Which messages go into a model's prompt: shared by the workflow's query and the worker cache.

Both must pick exactly the same messages, so the rule lives here once.
"""

import zlib
from collections.abc import Sequence

from workflows.messages import ContextMessage


def fit_context(messages: Sequence[ContextMessage], max_chars: int) -> list[ContextMessage]:
    """The newest messages whose total length fits `max_chars`, oldest first.

    An assistant message that asked for tools and the tool results after it are kept or
    dropped together, so a call is never separated from its result. The newest unit is always
    included. Trimming is stable under appending a user message or a plain reply:
    fit(fit(A) + b) == fit(A + b), which lets the worker cache keep only fitted lists.
    """
    picked: list[list[ContextMessage]] = []
    budget = max_chars
    for unit in reversed(_units(messages)):
        size = sum(len(m.content) for m in unit)
        if picked and size > budget:
            break
        picked.append(unit)
        budget -= size
    return [message for unit in reversed(picked) for message in unit]


def _units(messages: Sequence[ContextMessage]) -> list[list[ContextMessage]]:
    """Single messages, except a tool-calling assistant message grouped with its results."""
    units: list[list[ContextMessage]] = []
    for message in messages:
        if message.role == "tool" and units and _open_call_group(units[-1]):
            units[-1].append(message)
        else:
            units.append([message])
    return units


def _open_call_group(unit: list[ContextMessage]) -> bool:
    return unit[0].role == "assistant" and bool(unit[0].tool_calls)


def digest(text: str) -> str:
    """A short fingerprint of a message, so a cached copy can be checked against history."""
    return f"{zlib.crc32(text.encode()):08x}-{len(text)}"
