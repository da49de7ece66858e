"""Reply text as the model writes it, held in the worker's memory for gateways to read.

The stream is a view, never the record: the reply lands in workflow history when the model
call completes, whatever happens here. Nothing of it enters history while it streams, so a
long reply costs no more history events than a short one.

One `LiveText` per model-call attempt, keyed by (workflow id, turn, step, attempt). It keeps
the pieces as the provider produced them, so every reader gets the same pieces at the same
offsets whenever it joins. Readers pull from an offset at their own pace; the buffer is the
reply itself, bounded by the model's output limit however slow a reader is. Finished texts
are kept a while, so a reader that reconnects just after the end still finds them.
"""

import asyncio
import bisect
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

StreamKey = tuple[str, int, int, int]
"""(workflow id, turn, step, attempt)"""

Outcome = Literal["completed", "failed", "replaced"]


class TooManyReaders(Exception):
    """A text already has as many readers as the worker allows."""


@dataclass
class LiveText:
    text: str = ""
    ends: list[int] = field(default_factory=list)  # offset after each piece
    outcome: Outcome | None = None
    readers: int = 0
    finished_at: float | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def append(self, delta: str) -> None:
        if delta and self.outcome is None:
            self.text += delta
            self.ends.append(len(self.text))
            self._wake()

    def finish(self, content: str) -> None:
        """The model call succeeded with `content`.

        If the pieces did not add up to it (a provider that rewrote its output), readers are
        told the text was `replaced`, so they fetch the recorded reply instead.
        """
        if content.startswith(self.text):
            self.append(content[len(self.text) :])
            self._end("completed")
        else:
            self._end("replaced")

    def fail(self) -> None:
        self._end("failed")

    async def read(self, offset: int) -> str:
        """The piece after `offset` ("" once it has ended), waiting until there is one."""
        while offset >= len(self.text) and self.outcome is None:
            self._changed.clear()
            await self._changed.wait()
        index = bisect.bisect_right(self.ends, offset)
        return self.text[offset : self.ends[index]] if index < len(self.ends) else ""

    def _end(self, outcome: Outcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.finished_at = time.monotonic()
            self._wake()

    def _wake(self) -> None:
        self._changed.set()


class StreamHub:
    """The texts of this worker's model calls: in progress, and recently finished."""

    def __init__(self, max_texts: int = 1000, retain_seconds: float = 120.0) -> None:
        self._texts: OrderedDict[StreamKey, LiveText] = OrderedDict()
        self._max_texts = max_texts
        self._retain_seconds = retain_seconds

    def open(self, key: StreamKey) -> LiveText:
        self._evict()
        live = LiveText()
        self._texts[key] = live
        return live

    def get(self, key: StreamKey) -> LiveText | None:
        return self._texts.get(key)

    def _evict(self) -> None:
        """Forget finished texts past their retention, and the oldest beyond the count bound."""
        now = time.monotonic()
        for key, live in list(self._texts.items()):
            done = live.finished_at
            if done is not None and now - done > self._retain_seconds and not live.readers:
                del self._texts[key]
        while len(self._texts) >= self._max_texts:
            self._texts.popitem(last=False)


class Reading:
    """A counted reader of one text, refused past `limit` readers."""

    def __init__(self, live: LiveText, limit: int) -> None:
        if live.readers >= limit:
            raise TooManyReaders(f"this reply already has {limit} readers")
        self._live = live
        live.readers += 1

    def close(self) -> None:
        self._live.readers -= 1
