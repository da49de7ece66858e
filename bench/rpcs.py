"""Counts the dev server's RPCs by operation, from its Prometheus endpoint.

A turn that costs more CPU usually costs more round trips; counting them per turn shows
which calls our design adds over the bare baseline (a query, a heartbeat, ...).
"""

import asyncio
import re

import httpx

_SAMPLE = re.compile(r"^service_requests\{([^}]*)\} (\S+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse(text: str) -> dict[str, float]:
    """`service.Operation` -> request count, summed over namespaces."""
    counts: dict[str, float] = {}
    for labels, value in _SAMPLE.findall(text):
        fields = dict(_LABEL.findall(labels))
        key = f"{fields.get('service_name', '?')}.{fields.get('operation', '?')}"
        counts[key] = counts.get(key, 0.0) + float(value)
    return counts


class RpcMeter:
    """RPC counts between calls to `step()`.

    The server publishes its counters about once a second, so each reading waits for the
    next publication first.
    """

    FLUSH_SECONDS = 1.3

    def __init__(self, metrics_url: str) -> None:
        self._url = metrics_url
        self._last: dict[str, float] = {}

    async def _read(self) -> dict[str, float]:
        await asyncio.sleep(self.FLUSH_SECONDS)
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(self._url)
            response.raise_for_status()
            return parse(response.text)

    async def start(self) -> None:
        self._last = await self._read()

    async def step(self) -> dict[str, float]:
        """Counts since the previous `start()` or `step()`."""
        now = await self._read()
        delta = {k: v - self._last.get(k, 0.0) for k, v in now.items()}
        self._last = now
        return {k: v for k, v in delta.items() if v > 0}
