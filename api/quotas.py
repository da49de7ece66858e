"""The gateway's side of the per-user quotas: asks the user's quota workflow before work is queued.

Each call is one update-with-start on `quota:<user>` (started on first use, on the sessions'
task queue). With no quota settings (the default) nothing here calls Temporal, and messages
and sessions carry no reporting flags: quotas cost nothing when they are off.
"""

import asyncio

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy

from api.errors import ApiError
from common.ids import quota_workflow_id
from common.settings import Settings
from workflows.quota import UserQuotaWorkflow
from workflows.quota_messages import (
    AdmitMessage,
    QuotaInput,
    QuotaLimits,
    QuotaView,
    ReserveSession,
)

QUOTA_TIMEOUT_SECONDS = 15.0  # no sessions worker to run the quota workflow: 503, not a hang


class Quotas:
    def __init__(self, client: Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._limits = QuotaLimits(
            messages_per_minute=settings.quota_messages_per_minute,
            tokens_per_day=settings.quota_tokens_per_day,
        )

    @property
    def checks_messages(self) -> bool:
        return (
            self._limits.messages_per_minute is not None or self._limits.tokens_per_day is not None
        )

    @property
    def counts_tokens(self) -> bool:
        """Sessions report each turn's tokens (flag on the message) to the user's quota."""
        return self._limits.tokens_per_day is not None

    @property
    def counts_sessions(self) -> bool:
        """Sessions report opening and closing (flag on the run's input) to the user's quota."""
        return self._settings.max_sessions_per_user is not None

    async def admit_message(self, owner: str, session_id: str, message_id: str) -> None:
        """Raises (429 through api/errors.py) past messages per minute or tokens per day."""
        if self.checks_messages:
            req = AdmitMessage(session_id=session_id, message_id=message_id, limits=self._limits)
            await self._update(owner, "admit_message", req)

    async def reserve_session(self, owner: str, session_id: str) -> None:
        """Before a session starts or resumes; raises (409) when the user has all it may open."""
        limit = self._settings.max_sessions_per_user
        if limit is not None:
            await self._update(
                owner, "reserve_session", ReserveSession(session_id=session_id, limit=limit)
            )

    async def _update(self, owner: str, name: str, arg: object) -> QuotaView:
        operation = WithStartWorkflowOperation(
            UserQuotaWorkflow.run,
            QuotaInput(user=owner),
            id=quota_workflow_id(owner),
            task_queue=self._settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"quotas of **{owner}**",
        )
        try:
            view: QuotaView = await asyncio.wait_for(
                self._client.execute_update_with_start_workflow(
                    name, arg, start_workflow_operation=operation, result_type=QuotaView
                ),
                QUOTA_TIMEOUT_SECONDS,
            )
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError) as err:
            raise ApiError(
                503, "the quota check did not answer in time (is a worker running?); retry"
            ) from err
        return view
