"""`make record-histories`: run a few sessions and save their histories for replay tests.

Re-record only on purpose (a deliberate, versioned workflow change): the point of the
committed files is that a change which breaks replay of existing sessions fails CI.
"""

import asyncio
import contextlib
import sys
import uuid
from pathlib import Path

from temporalio.client import WorkflowExecution, WorkflowUpdateFailedError

from activities.providers.scripted import tool_script as script
from api.service import SessionService
from common.ids import quota_workflow_id, workflow_id
from common.process import exit_without_finalizers
from devstack.server import start_dev_env
from tests import tool_fixtures
from tests.conftest import scripted_settings
from tools.builtin import builtin_registry
from tools.registry import tools_in
from worker.build import build_worker
from workflows.messages import SendMessage, SessionConfig, ToolDecision

OUT = Path(__file__).parent / "histories"
OWNER = "recorder"


async def record(only: set[str]) -> None:
    """Record every session, or only those named (the others' files stay as they were)."""
    env = await start_dev_env()
    settings = scripted_settings(f"tq-record-{uuid.uuid4().hex[:8]}")
    service = SessionService(env.client, settings)

    async def say(session_id: str, content: str, message_id: str | None = None) -> None:
        msg = SendMessage(message_id=message_id or uuid.uuid4().hex, content=content)
        await service.send_and_wait(OWNER, session_id, msg)

    async def session(name: str, **config: object) -> str:
        await service.create(OWNER, name, SessionConfig(model="scripted/echo", **config))
        return name

    async def decide(session_id: str, approve: bool) -> None:
        for _ in range(200):  # the call shows up as pending within moments
            status = await service.status(OWNER, session_id)
            if status.pending_approvals:
                break
            await asyncio.sleep(0.05)
        decision = ToolDecision(call_id=status.pending_approvals[0].call_id, approve=approve)
        await service.decide_tool_call(OWNER, session_id, decision)

    tools = builtin_registry()
    tools.register(*tools_in(tool_fixtures))
    try:
        async with build_worker(env.client, settings, tools=tools):
            conversation = await session("conversation", system_prompt="be brief")
            await say(conversation, "hello", "m1")
            await say(conversation, "hello", "m1")  # resend
            await say(conversation, "[[fail=400]] a failing turn")
            await say(conversation, "[[fail_once=503]] a retried turn")
            await asyncio.gather(*(say(conversation, f"concurrent {i}") for i in range(4)))
            await service.send(OWNER, conversation, SendMessage(message_id="sig", content="sig"))
            await service.end(OWNER, conversation)
            await say(conversation, "resumed")
            await service.end(OWNER, conversation)

            rolling = await session("continue-as-new", max_turns_per_run=2)
            await asyncio.gather(*(say(rolling, f"turn {i}") for i in range(5)))
            await service.end(OWNER, rolling)

            expiring = await session("expiry", inactivity_timeout_seconds=1)
            await say(expiring, "then silence")

            tooled = await session(
                "tools",
                tools=["calculate", "send_note"],
                max_tool_steps=3,
                approval_timeout_seconds=1,
            )
            await say(tooled, "one " + script([("calculate", {"expression": "6*7"})]))
            add = ("calculate", {"expression": "1+1"})
            await say(tooled, "parallel " + script([add, add, ("nope", {})]))
            await say(tooled, "bound " + script([add], [add], [add], [add]))
            note = ("send_note", {"text": "hi"})
            for approve in (True, False):
                waiting = asyncio.create_task(say(tooled, "note " + script([note])))
                await decide(tooled, approve)
                await waiting
            await say(tooled, "unanswered " + script([note]))  # denied at the deadline
            await service.set_tools(OWNER, tooled, ["calculate"])
            await say(tooled, "after " + script([note]))
            await service.end(OWNER, tooled)

            # Every limit and quota on: the session reports to the owner's quota workflow.
            limited = SessionService(
                env.client,
                settings.model_copy(
                    update={
                        "quota_messages_per_minute": 100,
                        "quota_tokens_per_day": 1_000_000,
                        "max_sessions_per_user": 5,
                        "max_messages_per_session": 4,
                    }
                ),
            )
            quotas = "quotas"
            await limited.create(
                OWNER, quotas, SessionConfig(model="scripted/echo", max_messages=4)
            )
            for content in ("one", "two", "two"):
                await limited.send_and_wait(
                    OWNER, quotas, SendMessage(message_id=content, content=content)
                )
            await limited.send(OWNER, quotas, SendMessage(message_id="sig", content="by signal"))
            await limited.end(OWNER, quotas)
            await limited.send_and_wait(
                OWNER, quotas, SendMessage(message_id="r", content="resumed")
            )
            await limited.end(OWNER, quotas)
            with contextlib.suppress(WorkflowUpdateFailedError):  # full: refused once resumed
                await limited.send_and_wait(OWNER, quotas, SendMessage(message_id="x", content="x"))
            await limited.end(OWNER, quotas)
            await asyncio.sleep(2)

        recorded = (
            (conversation, workflow_id(OWNER, conversation), 2),
            (rolling, workflow_id(OWNER, rolling), 2),
            (expiring, workflow_id(OWNER, expiring), 1),
            (tooled, workflow_id(OWNER, tooled), 1),
            (quotas, workflow_id(OWNER, quotas), 3),
            ("user-quota", quota_workflow_id(OWNER), 1),
        )
        for name, wf_id, expected_runs in recorded:
            if only and name not in only:
                continue
            runs: list[WorkflowExecution] = []
            while len(runs) < expected_runs:  # visibility catches up within moments
                await asyncio.sleep(0.2)
                runs = [r async for r in env.client.list_workflows(f'WorkflowId = "{wf_id}"')]
            for index, run in enumerate(sorted(runs, key=lambda r: r.start_time)):
                history = await env.client.get_workflow_handle(
                    wf_id, run_id=run.run_id
                ).fetch_history()
                path = OUT / f"{name}-run{index + 1}.json"
                path.write_text(history.to_json())
                print(f"wrote {path} ({len(history.events)} events)")  # noqa: T201
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record(set(sys.argv[1:])))
    exit_without_finalizers(0)
