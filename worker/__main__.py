"""`python -m worker`: run a worker until SIGTERM or SIGINT, then drain gracefully."""

import asyncio
import logging
import signal
from contextlib import AsyncExitStack

import uvloop

from activities.providers import ProviderRegistry
from activities.stream_hub import StreamHub
from common.process import exit_without_finalizers
from common.settings import get_settings
from common.temporal_client import connect
from worker.build import build_workers
from worker.stream_server import serving_streams

log = logging.getLogger("worker")


async def main() -> None:
    settings = get_settings()
    client = await connect(settings)
    providers = ProviderRegistry(settings)
    hub = StreamHub(retain_seconds=settings.stream_retain_seconds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as running:
        stream_url = None
        if settings.worker_role != "sessions":
            stream_url = await running.enter_async_context(serving_streams(hub, settings))
        workers = build_workers(client, settings, providers, hub=hub, stream_url=stream_url)
        queues = ", ".join(w.task_queue for w in workers)
        log.info(
            "worker (%s) polling %s at %s; live replies at %s",
            settings.worker_role,
            queues,
            settings.temporal_address,
            stream_url,
        )
        for worker in workers:
            await running.enter_async_context(worker)
        await stop.wait()
        log.info("draining: finishing running activities before exit")
    await providers.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvloop.run(main())  # a faster event loop; the SDK's workflows run on their own loop anyway
    exit_without_finalizers(0)
