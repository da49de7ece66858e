"""Reads Server-Sent Events (the gateway's turn streams), from sync or async line sources."""

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServerEvent:
    event: str
    data: dict[str, Any]
    id: str | None = None


@dataclass
class _Parser:
    """Feed lines; an event comes out at each blank line. Comments (keepalives) are skipped."""

    event: str = "message"
    data: list[str] = field(default_factory=list)
    id: str | None = None

    def feed(self, line: str) -> ServerEvent | None:
        if not line:
            if not self.data:
                return None
            out = ServerEvent(self.event, json.loads("\n".join(self.data)), self.id)
            self.event, self.data, self.id = "message", [], None
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        elif name == "id":
            self.id = value
        return None


def iter_events(lines: Iterable[str]) -> Iterator[ServerEvent]:
    parser = _Parser()
    for line in lines:
        if (event := parser.feed(line)) is not None:
            yield event


async def aiter_events(lines: AsyncIterable[str]) -> AsyncIterator[ServerEvent]:
    parser = _Parser()
    async for line in lines:
        if (event := parser.feed(line)) is not None:
            yield event
