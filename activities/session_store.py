"""Reads the state of a session's previous run, so a resumed session keeps its history.

A message to an expired or ended session starts a new run under the same workflow id; that
run starts empty and calls `load_previous_session` once. The final state is read with a
query, which works on closed runs too (the worker replays them), however they closed. The
gateway names the closed run; without a name it is looked up through visibility.
"""

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus

from workflows.messages import CarriedState, PreviousSessionRequest

_SKIP = {WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW}


class SessionStoreActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="load_previous_session")
    async def load_previous_session(self, req: PreviousSessionRequest) -> CarriedState | None:
        from workflows.session import ChatSessionWorkflow

        run_id = req.run_id or await self._latest_closed_run(req.workflow_id)
        if run_id is None:
            return None
        handle = self._client.get_workflow_handle(req.workflow_id, run_id=run_id)
        return await handle.query(ChatSessionWorkflow.snapshot)

    async def _latest_closed_run(self, workflow_id: str) -> str | None:
        current_run = activity.info().workflow_run_id
        latest = None
        async for run in self._client.list_workflows(f'WorkflowId = "{workflow_id}"'):
            if run.run_id == current_run or run.status in _SKIP:
                continue
            if latest is None or run.start_time > latest.start_time:
                latest = run
        return latest.run_id if latest else None
