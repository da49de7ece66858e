"""`python -m worker`: run a worker until SIGTERM or SIGINT, then drain gracefully."""

import asyncio
import logging
import signal
from contextlib import AsyncExitStack

import uvloop

from activities.providers import ProviderRegistry
from activities.stream_hub import StreamHub
from common.logs import configure_logging
from common.process import exit_without_finalizers
from common.settings import get_settings
from common.temporal_client import connect
from worker.build import build_workers
from worker.stream_server import serving_streams
from worker.telemetry import worker_runtime

log = logging.getLogger("worker")


async def main() -> None:
    settings = get_settings()
    client = await connect(settings, worker_runtime(settings))
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
        metrics = settings.worker_metrics_port
        log.info(
            "worker (%s) polling %s at %s; live replies at %s; metrics at %s",
            settings.worker_role,
            queues,
            settings.temporal_address,
            stream_url,
            f"http://{settings.worker_metrics_host}:{metrics}/metrics" if metrics else None,
        )
        for worker in workers:
            await running.enter_async_context(worker)
        await stop.wait()
        log.info("draining: finishing running activities before exit")
    await providers.aclose()


if __name__ == "__main__":
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    uvloop.run(main())  # a faster event loop; the SDK's workflows run on their own loop anyway
    exit_without_finalizers(0)
