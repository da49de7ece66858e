"""Heartbeating while an activity waits on something slow (a model, a tool)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio import activity

HEARTBEAT_EVERY_SECONDS = 2.0


@asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeat in the background, so a dead worker's call moves on within seconds.

    The first beat comes after one interval, not at once: most tool calls and many model
    calls finish sooner, and an immediate beat would cost each of them an extra RPC.
    """

    async def beat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
