"""Heartbeating while an activity waits on something slow (a model, a tool)."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio import activity

HEARTBEAT_EVERY_SECONDS = 2.0


@asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeat in the background, so a dead worker's call moves on within seconds."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
