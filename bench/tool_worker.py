"""The worker process of `bench.tools`: our session worker and a bare baseline, side by side.

One process hosts two workers, each on its own task queue: our `ChatSessionWorkflow` worker,
built by `worker.build.build_worker` with the scripted provider and one instant tool
(`bench_noop`), and a bare worker whose workflow's updates run one no-op activity (`activity`),
none (`empty`) or three in a row (`activities3`). Same process, same client and event loop, so
every side of the benchmark takes the same path: the benchmark's Temporal client -> update ->
this process.

`python -m bench.tool_worker --address HOST:PORT --chat-queue Q1 --bare-queue Q2` runs until
SIGTERM.
"""

import argparse
import asyncio
import signal
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    # The tool definition only; no I/O. Passed through so the sandbox does not re-import it.
    from pydantic import BaseModel

    from tools.registry import ToolRegistry, tool

WORKFLOW_NAME = "BenchBareToolTurns"
WITH_ACTIVITY = "activity"
WITHOUT_ACTIVITY = "empty"
WITH_THREE_ACTIVITIES = "activities3"
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


@activity.defn(name="bench_noop_activity")
async def noop_activity(text: str) -> str:
    return "echo: " + text


@workflow.defn(name=WORKFLOW_NAME)
class BareToolTurnsWorkflow:
    """Lives until told to stop, so every update lands on a running, cached workflow."""

    def __init__(self) -> None:
        self._stop = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._stop and workflow.all_handlers_finished())

    @workflow.update(name=WITH_ACTIVITY)
    async def with_activity(self, text: str) -> str:
        return await workflow.execute_activity(
            noop_activity, text, start_to_close_timeout=timedelta(seconds=30)
        )

    @workflow.update(name=WITH_THREE_ACTIVITIES)
    async def three_activities(self, text: str) -> str:
        """A tool turn's shape (model, tool, model) with nothing of ours in it."""
        reply = ""
        for _ in range(3):
            reply = await workflow.execute_activity(
                noop_activity, text, start_to_close_timeout=timedelta(seconds=30)
            )
        return reply

    @workflow.update(name=WITHOUT_ACTIVITY)
    async def without_activity(self, text: str) -> str:
        return "echo: " + text

    @workflow.signal(name="stop")
    def stop(self) -> None:
        self._stop = True


async def serve(address: str, chat_queue: str, bare_queue: str) -> None:
    """Run both workers until SIGTERM or SIGINT."""
    # Imported here, not at the top: the sandbox re-imports this module for the bare workflow.
    from common.settings import Settings
    from common.temporal_client import connect
    from worker.build import build_worker

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
        workflows=[BareToolTurnsWorkflow],
        activities=[noop_activity],
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
    import uvloop

    from common.process import exit_without_finalizers

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
