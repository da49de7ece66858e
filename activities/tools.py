"""The tool activity: one tool call per activity, so each has its own timeout and retries.

Retry decisions are made here: a failure the tool reports as transient (a timeout, a lost
connection) is raised for Temporal to retry while the tool's `max_attempts` allows; anything
else, and the last transient failure, goes back to the model as an error result. A worker
lost mid-call is retried by Temporal (heartbeat timeout) on another worker, so a tool with
side effects should key them on `ToolContext.idempotency_key`.
"""

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.context_cache import ToolResultCache
from activities.heartbeat import heartbeating
from tools.registry import ToolContext, ToolRegistry
from workflows.messages import ToolCallInput, ToolOutcome

# ApplicationError type of a transient tool failure worth another attempt.
TOOL_RETRY = "ToolRetry"


class ToolActivities:
    def __init__(self, registry: ToolRegistry, results: ToolResultCache | None = None) -> None:
        self._registry = registry
        self._results = results

    @activity.defn(name="run_tool")
    async def run_tool(self, inp: ToolCallInput) -> ToolOutcome:
        context = ToolContext(
            session_id=inp.session_id, turn=inp.turn, call_id=inp.call.id, owner=inp.owner
        )
        async with heartbeating():
            result = await self._registry.call(inp.call.name, inp.call.arguments, context)
        if result.retryable and activity.info().attempt < inp.max_attempts:
            raise ApplicationError(result.content, type=TOOL_RETRY)
        outcome = ToolOutcome(
            content=result.content, is_error=not result.ok, truncated=result.truncated
        )
        if self._results is not None:  # lets the next model call on this worker skip a query
            self._results.put(inp.workflow_id, inp.turn, inp.call.id, outcome)
        return outcome
