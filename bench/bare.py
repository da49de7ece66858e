"""The bare Temporal baseline: one update runs one instant activity and returns its result.

Two more updates serve `bench.tools`: one with no activity, one chaining three (a tool
turn's shape: model, tool, model, with nothing of ours in it).

It is the floor our service is measured against: the same dev server, the same process
layout (a worker in its own process), the same data converter, none of our logic.
`python -m bench.bare --address HOST:PORT --task-queue Q` runs its worker until SIGTERM.
"""

import argparse
import asyncio
import signal
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

WORKFLOW_NAME = "BenchBareTurns"
UPDATE_NAME = "turn"
EMPTY_UPDATE_NAME = "turn_without_activity"
CHAIN_UPDATE_NAME = "turn_with_three_activities"


@activity.defn(name="bench_bare_reply")
async def bare_reply(text: str) -> str:
    return "echo: " + text


@workflow.defn(name=WORKFLOW_NAME)
class BareTurnsWorkflow:
    """Lives until told to stop, so every turn lands on a running, cached workflow."""

    def __init__(self) -> None:
        self._stop = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._stop and workflow.all_handlers_finished())

    @workflow.update(name=UPDATE_NAME)
    async def turn(self, text: str) -> str:
        return await workflow.execute_activity(
            bare_reply, text, start_to_close_timeout=timedelta(seconds=30)
        )

    @workflow.update(name=EMPTY_UPDATE_NAME)
    async def turn_without_activity(self, text: str) -> str:
        return "echo: " + text

    @workflow.update(name=CHAIN_UPDATE_NAME)
    async def turn_with_three_activities(self, text: str) -> str:
        reply = ""
        for _ in range(3):
            reply = await workflow.execute_activity(
                bare_reply, text, start_to_close_timeout=timedelta(seconds=30)
            )
        return reply

    @workflow.signal(name="stop")
    def stop(self) -> None:
        self._stop = True


async def serve(
    address: str,
    task_queue: str,
    max_concurrent_activities: int | None,
    max_concurrent_workflow_tasks: int | None,
) -> None:
    """Run the baseline worker until SIGTERM or SIGINT."""
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[BareTurnsWorkflow],
        activities=[bare_reply],
        max_concurrent_activities=max_concurrent_activities,
        max_concurrent_workflow_tasks=max_concurrent_workflow_tasks,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument(
        "--max-concurrent-activities", type=int, default=None, help="SDK default when omitted"
    )
    parser.add_argument(
        "--max-concurrent-workflow-tasks", type=int, default=None, help="SDK default when omitted"
    )
    args = parser.parse_args()
    asyncio.run(
        serve(
            args.address,
            args.task_queue,
            args.max_concurrent_activities,
            args.max_concurrent_workflow_tasks,
        )
    )


if __name__ == "__main__":
    main()
