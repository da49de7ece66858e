"""`python -m worker`: run a worker until SIGTERM or SIGINT, then drain gracefully."""

import asyncio
import logging
import signal

import uvloop

from activities.providers import ProviderRegistry
from common.process import exit_without_finalizers
from common.settings import get_settings
from common.temporal_client import connect
from worker.build import build_worker

log = logging.getLogger("worker")


async def main() -> None:
    settings = get_settings()
    client = await connect(settings)
    providers = ProviderRegistry(settings)
    worker = build_worker(client, settings, providers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %s at %s", settings.task_queue, settings.temporal_address)
    async with worker:
        await stop.wait()
        log.info("draining: finishing running activities before exit")
    await providers.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvloop.run(main())  # a faster event loop; the SDK's workflows run on their own loop anyway
    exit_without_finalizers(0)
