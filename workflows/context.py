"""Which messages go into a model's prompt: shared by the workflow's query and the worker cache.

Both must pick exactly the same messages, so the rule lives here once. The workflow and the
cache trim by characters (a cheap upper bound on what a prompt could use); the LLM activity
then trims the same way by the model's tokens (activities/prompt_window.py).
"""

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from workflows.messages import ContextMessage

Cost = Callable[[ContextMessage], int]


def message_chars(message: ContextMessage) -> int:
    return len(message.content)


@dataclass(frozen=True)
class Split:
    kept: list[ContextMessage]
    """The newest messages that fit, oldest first."""
    kept_cost: int
    dropped_cost: int


def split_context(
    messages: Sequence[ContextMessage], budget: int, cost: Cost = message_chars
) -> Split:
    """The newest messages whose total cost fits `budget`, and the older rest.

    An assistant message that asked for tools and the tool results after it are kept or
    dropped together, so a call is never separated from its result, and a message is never
    cut. The newest unit is always kept (the caller decides what to do if it alone is too
    big: then `kept_cost` is over `budget`). Trimming is stable under appending a user
    message or a plain reply: fit(fit(A) + b) == fit(A + b), which lets the worker cache
    keep only fitted lists.
    """
    units = _units(messages)
    picked = 0
    kept_cost = 0
    costs = [sum(cost(m) for m in unit) for unit in units]
    for size in reversed(costs):
        if picked and kept_cost + size > budget:
            break
        picked += 1
        kept_cost += size
    cut = len(units) - picked
    return Split(
        kept=[m for unit in units[cut:] for m in unit],
        kept_cost=kept_cost,
        dropped_cost=sum(costs[:cut]),
    )


def fit_context(
    messages: Sequence[ContextMessage], budget: int, cost: Cost = message_chars
) -> list[ContextMessage]:
    """The newest messages that fit `budget` (see `split_context`), oldest first."""
    return split_context(messages, budget, cost).kept


def split_head(
    context: Sequence[ContextMessage],
) -> tuple[list[ContextMessage], list[ContextMessage]]:
    """(the leading system messages: prompt and running summary, the conversation after)."""
    size = next((i for i, m in enumerate(context) if m.role != "system"), len(context))
    return list(context[:size]), list(context[size:])


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
