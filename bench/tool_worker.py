"""The worker process of `bench.tools`: our session worker and a bare baseline, side by side.

One process hosts two workers, each on its own task queue: our `ChatSessionWorkflow` worker,
built by `worker.build.build_worker` with the scripted provider and one instant tool
(`bench_noop`), and the bare baseline worker of `bench.bare`, whose updates run one instant
activity, none, or three in a row. Same process, same client and event loop, so every side of
the benchmark takes the same path: the benchmark's Temporal client -> update -> this process.

`python -m bench.tool_worker --address HOST:PORT --chat-queue Q1 --bare-queue Q2` runs until
SIGTERM.
"""

import argparse
import asyncio
import signal

import uvloop
from pydantic import BaseModel
from temporalio.worker import Worker

from bench.bare import BareTurnsWorkflow, bare_reply
from common.process import exit_without_finalizers
from common.settings import Settings
from common.temporal_client import connect
from tools.registry import ToolRegistry, tool
from worker.build import build_worker

NOOP_TOOL = "bench_noop"
NOOP_RESULT = "ok"


class NoArguments(BaseModel):
    pass


@tool(name=NOOP_TOOL, description="Does nothing and answers ok (benchmark tool).")
async def bench_noop(args: NoArguments) -> str:
    return NOOP_RESULT


def noop_registry() -> ToolRegistry:
    """The tools our worker serves in the benchmark: only the instant one."""
    registry = ToolRegistry()
    registry.register(bench_noop)
    return registry


async def serve(address: str, chat_queue: str, bare_queue: str) -> None:
    """Run both workers until SIGTERM or SIGINT."""
    settings = Settings(
        _env_file=None,
        temporal_address=address,
        task_queue=chat_queue,
        scripted_provider_enabled=True,
        default_model="scripted/echo",
        api_keys={},
    )
    client = await connect(settings)
    ours = build_worker(client, settings, tools=noop_registry())
    bare = Worker(
        client,
        task_queue=bare_queue,
        workflows=[BareTurnsWorkflow],
        activities=[bare_reply],
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ours, bare:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--chat-queue", required=True)
    parser.add_argument("--bare-queue", required=True)
    args = parser.parse_args()
    # uvloop as `python -m worker` uses it; both workers share the loop, so it favours neither.
    uvloop.run(serve(args.address, args.chat_queue, args.bare_queue))
    exit_without_finalizers(0)


if __name__ == "__main__":
    main()
