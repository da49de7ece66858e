"""Which messages go into a model's prompt: shared by the workflow's query and the worker cache.

Both must pick exactly the same messages, so the rule lives here once.
"""

import zlib
from collections.abc import Sequence

from workflows.messages import ContextMessage


def fit_context(messages: Sequence[ContextMessage], max_chars: int) -> list[ContextMessage]:
    """The newest messages whose total length fits `max_chars`, oldest first.

    The newest message is always included. Trimming is stable under appending:
    fitting (fit(A) + b) gives the same as fitting (A + b), which lets the cache keep only
    fitted lists.
    """
    picked: list[ContextMessage] = []
    budget = max_chars
    for message in reversed(messages):
        if picked and len(message.content) > budget:
            break
        picked.append(message)
        budget -= len(message.content)
    picked.reverse()
    return picked


def digest(text: str) -> str:
    """A short fingerprint of a message, so a cached copy can be checked against history."""
    return f"{zlib.crc32(text.encode()):08x}-{len(text)}"
