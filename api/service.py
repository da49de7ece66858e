"""Every Temporal call the gateway makes, in one class the routes share.

Hot path (a message to a live session): one update-with-start. Existence is checked once per
session per gateway process (then cached), so unknown sessions answer 404 without the check
costing every message a round trip.
With per-user quotas set, one more call (an update-with-start on the user's quota workflow,
api/quotas.py) comes first; with none set, none.
"""

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import quote

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import ApiError, not_found
from api.quotas import Quotas
from api.schemas import SessionSummary
from api.session_config import session_config
from common.ids import parse_workflow_id, update_id, workflow_id
from common.live_streams import LLM_ACTIVITY, stream_url_of
from common.names import OWNER_ATTRIBUTE, STATUS_ATTRIBUTE, WORKFLOW_TYPE
from common.settings import Settings
from workflows.messages import (
    ChatMessage,
    HistoryPage,
    HistoryRequest,
    ImportBatch,
    ImportDone,
    RecordedToolCall,
    Reply,
    ReplyLookup,
    SendMessage,
    SessionConfig,
    SessionInput,
    SessionStatus,
    SetTools,
    ToolDecision,
    TurnView,
    TurnViewRequest,
)
from workflows.session import (
    LOADING_MESSAGE,
    TURN_IN_PROGRESS_MESSAGE,
    ChatSessionWorkflow,
    session_full_message,
)

log = logging.getLogger("api.service")

QUERY_TIMEOUT = timedelta(seconds=15)
ARCHIVE_QUERY_TIMEOUT = timedelta(seconds=60)  # a closed run is replayed to answer
RESUME_LOAD_SECONDS = 5.0
T = TypeVar("T")


async def loaded(ask: Callable[[], Awaitable[T]]) -> T:
    """A query, asked again for up to RESUME_LOAD_SECONDS while a resumed run is still loading
    its history (its queries answer LOADING_MESSAGE until then), rather than a 503. Every read
    goes through here, so a read right after the message that resumed a session sees its
    history."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RESUME_LOAD_SECONDS
    while True:
        try:
            return await ask()
        except WorkflowQueryFailedError as err:
            if LOADING_MESSAGE not in str(err) or loop.time() >= deadline:
                raise
        await asyncio.sleep(0.05)


_KNOWN_SESSIONS_CACHE = 10_000
_MODEL_MEMO = "model"
_LIVE_STATES = ("active", "working", "awaiting_approval")

Handle = WorkflowHandle[ChatSessionWorkflow, SessionStatus]


@dataclass(frozen=True)
class LiveCall:
    """A model call Temporal has scheduled; once started, on a worker serving `url`."""

    attempt: int
    started: bool
    url: str | None = None


@dataclass(frozen=True)
class Progress:
    """A run's history length and its model call in progress, if any: when either changes,
    something a stream shows may have changed."""

    history_length: int
    call: LiveCall | None


class SessionService:
    def __init__(self, client: Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._known: OrderedDict[str, str] = OrderedDict()  # workflow id -> model
        self._quotas = Quotas(client, settings)

    # ---- lifecycle ---------------------------------------------------------------------

    async def create(
        self, owner: str, session_id: str, config: SessionConfig, importing: bool = False
    ) -> None:
        wf_id = workflow_id(owner, session_id)
        await self._quotas.reserve_session(owner, session_id)
        try:
            await self._client.start_workflow(
                ChatSessionWorkflow.run,
                SessionInput(
                    owner=owner,
                    session_id=session_id,
                    config=config,
                    activity_task_queue=self._settings.activity_task_queue,
                    count_sessions=self._quotas.counts_sessions,
                    importing=importing,
                ),
                **self._start_options(owner, wf_id, config.model),
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError as err:
            raise ApiError(
                409, f"session {session_id!r} already exists; send it a message to continue it"
            ) from err
        self._remember(wf_id, config.model)

    async def import_session(
        self,
        owner: str,
        session_id: str,
        config: SessionConfig,
        batches: list[ImportBatch],
        done: ImportDone,
    ) -> SessionStatus:
        """A new session holding the given messages; it takes new ones once all are in.

        Each batch is an update the workflow de-duplicates, so a retried one is harmless;
        if the import fails midway the half-filled session is terminated, never left open.
        """
        await self.create(owner, session_id, config, importing=True)
        handle = self._client.get_workflow_handle(workflow_id(owner, session_id))
        try:
            for batch in batches:
                await handle.execute_update("import_messages", batch, result_type=SessionStatus)
            status: SessionStatus = await handle.execute_update(
                "finish_import", done, result_type=SessionStatus
            )
            return status
        except BaseException:
            with contextlib.suppress(RPCError):
                await handle.terminate("import failed")
            raise

    async def end(self, owner: str, session_id: str) -> SessionStatus:
        handle = await self._existing(owner, session_id)
        try:
            ended: SessionStatus = await handle.execute_update(
                "end_session", result_type=SessionStatus
            )
            return ended
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        return await self.status(owner, session_id)  # it had already closed

    # ---- messages ----------------------------------------------------------------------

    async def send_and_wait(self, owner: str, session_id: str, msg: SendMessage) -> Reply | None:
        """The reply, or None when it takes longer than the wait limit (it still arrives).

        A message past the session's own limit is refused by the workflow's update validator.
        """
        handle = await self._existing(owner, session_id)
        msg = await self._admit(owner, session_id, msg)
        context = _log_context(owner, session_id, msg)
        log.info("message sent", extra=context)
        log.debug("message text", extra={**context, "text": msg.content})
        try:
            reply = await asyncio.wait_for(
                self._update(handle, owner, session_id, msg),
                timeout=self._settings.reply_wait_seconds,
            )
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            # An update not yet accepted may not be durable: make sure with a signal, which
            # the workflow de-duplicates by message id.
            await self._signal(handle, owner, session_id, msg)
            log.info("reply not ready within the wait limit", extra=context)
            return None
        answer = reply.reply
        if answer is not None:
            outcome = "ok" if answer.error is None else "error"
            log.info("reply received", extra={**context, "turn": answer.turn, "outcome": outcome})
        return reply

    async def _update(self, handle: Handle, owner: str, session_id: str, msg: SendMessage) -> Reply:
        try:
            reply: Reply = await handle.execute_update(
                "send_message_and_wait", msg, id=update_id(msg.message_id), result_type=Reply
            )
            return await self._held_reply(owner, session_id, reply)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        # The run has closed (expired or ended): start the next one, seeded with its history.
        await self._quotas.reserve_session(owner, session_id)
        operation = WithStartWorkflowOperation(
            ChatSessionWorkflow.run,
            await self._resume_input(handle, owner, session_id),
            **self._start_options(owner, handle.id),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
        resumed: Reply = await self._client.execute_update_with_start_workflow(
            "send_message_and_wait",
            msg,
            id=update_id(msg.message_id),
            start_workflow_operation=operation,
            result_type=Reply,
        )
        return await self._held_reply(owner, session_id, resumed)

    async def _held_reply(self, owner: str, session_id: str, reply: Reply) -> Reply:
        """A resend of a message answered runs ago gets its reply from the run holding it."""
        if reply.reply is not None or reply.reply_seq is None:
            return reply
        found = await self.message_at(owner, session_id, reply.reply_seq)
        return reply.model_copy(update={"reply": found})

    async def send(self, owner: str, session_id: str, msg: SendMessage) -> None:
        """By signal: durable once this returns; the reply is fetched later."""
        handle = await self._existing(owner, session_id)
        await self._check_room(handle, msg)
        await self._signal(handle, owner, session_id, await self._admit(owner, session_id, msg))
        context = _log_context(owner, session_id, msg)
        log.info("message sent (reply fetched later)", extra=context)
        log.debug("message text", extra={**context, "text": msg.content})

    async def _signal(self, handle: Handle, owner: str, session_id: str, msg: SendMessage) -> None:
        try:
            await handle.signal("send_message", msg)
            return
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        await self._quotas.reserve_session(owner, session_id)
        await self._client.start_workflow(
            ChatSessionWorkflow.run,
            await self._resume_input(handle, owner, session_id),
            **self._start_options(owner, handle.id),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_signal="send_message",
            start_signal_args=[msg],
        )

    async def _admit(self, owner: str, session_id: str, msg: SendMessage) -> SendMessage:
        """The user's quotas, before anything is queued; the message as the session gets it."""
        await self._quotas.admit_message(owner, session_id, msg.message_id)
        if self._quotas.counts_tokens:
            return msg.model_copy(update={"count_tokens": True})
        return msg

    async def _check_room(self, handle: Handle, msg: SendMessage) -> None:
        """A signal has no validator: refuse here a message past the session's limit (one
        racing past this check is dropped by the workflow, which logs it) or, under busy_policy
        reject, one sent while a turn runs (one racing past this check is queued)."""
        status = await loaded(
            lambda: handle.query(ChatSessionWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
        )
        busy = status.status in ("working", "awaiting_approval") or status.queued > 0
        if status.busy_policy == "reject" and busy:
            known = await loaded(
                lambda: handle.query(
                    ChatSessionWorkflow.reply, msg.message_id, rpc_timeout=QUERY_TIMEOUT
                )
            )
            if known.state == "unknown":
                raise ApiError(409, TURN_IN_PROGRESS_MESSAGE)
        # A closed session takes the current setting when this message resumes it.
        live = status.status in _LIVE_STATES
        limit = status.max_messages if live else self._settings.max_messages_per_session
        if limit is None or status.turns + status.queued < limit:
            return
        known = await loaded(
            lambda: handle.query(
                ChatSessionWorkflow.reply, msg.message_id, rpc_timeout=QUERY_TIMEOUT
            )
        )
        if known.state == "unknown":  # a resend of a stored message is still answered
            raise ApiError(409, session_full_message(limit))

    async def reply(self, owner: str, session_id: str, message_id: str) -> ReplyLookup:
        handle = await self._existing(owner, session_id)
        lookup = await loaded(
            lambda: handle.query(ChatSessionWorkflow.reply, message_id, rpc_timeout=QUERY_TIMEOUT)
        )
        if lookup.state == "done" and lookup.reply is None and lookup.reply_seq is not None:
            found = await self.message_at(owner, session_id, lookup.reply_seq)
            return lookup.model_copy(update={"reply": found})
        return lookup

    async def message_at(self, owner: str, session_id: str, seq: int) -> ChatMessage | None:
        page = await self.history(owner, session_id, seq - 1, 1)
        return page.messages[0] if page.messages and page.messages[0].seq == seq else None

    async def turn_view(self, owner: str, session_id: str, req: TurnViewRequest) -> TurnView:
        handle = await self._existing(owner, session_id)
        return await loaded(
            lambda: handle.query(ChatSessionWorkflow.turn_view, req, rpc_timeout=QUERY_TIMEOUT)
        )

    async def progress(self, owner: str, session_id: str) -> Progress:
        """How far the session's run has got, from Temporal alone (one describe, no query, so
        it never holds up the workflow's own tasks).

        Temporal knows which worker took the model call; that worker's identity names its
        stream server (see `common/live_streams.py`).
        """
        handle = await self._existing(owner, session_id)
        description = await handle.describe(rpc_timeout=QUERY_TIMEOUT)
        raw = description.raw_description
        call = None
        for pending in raw.pending_activities:
            if pending.activity_type.name == LLM_ACTIVITY:
                started = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                url = stream_url_of(pending.last_worker_identity) if started else None
                call = LiveCall(pending.attempt, started, url)
                break
        return Progress(raw.workflow_execution_info.history_length, call)

    # ---- tools -------------------------------------------------------------------------

    async def decide_tool_call(
        self, owner: str, session_id: str, decision: ToolDecision
    ) -> RecordedToolCall:
        handle = await self._existing(owner, session_id)
        decided: RecordedToolCall = await self._running_update(
            handle, session_id, "decide_tool_call", decision, RecordedToolCall
        )
        return decided

    async def set_tools(self, owner: str, session_id: str, tools: list[str]) -> SessionStatus:
        handle = await self._existing(owner, session_id)
        status: SessionStatus = await self._running_update(
            handle, session_id, "set_tools", SetTools(tools=tools), SessionStatus
        )
        return status

    async def _running_update(
        self, handle: Handle, session_id: str, name: str, arg: Any, result_type: type[Any]
    ) -> Any:
        """An update that only makes sense while the session runs (a closed one is not resumed)."""
        try:
            return await handle.execute_update(name, arg, result_type=result_type)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        raise ApiError(
            409,
            f"session {session_id!r} has ended or expired; send it a message to resume it first",
        )

    # ---- reading -----------------------------------------------------------------------

    async def status(self, owner: str, session_id: str) -> SessionStatus:
        handle = await self._existing(owner, session_id)
        return await loaded(
            lambda: handle.query(ChatSessionWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
        )

    async def history(self, owner: str, session_id: str, after: int, limit: int) -> HistoryPage:
        """A page of the whole conversation, across runs: messages older than the current
        run holds are read from the closed run that held them (a query on a closed run
        replays it on a worker, so such pages are slower)."""
        handle = await self._existing(owner, session_id)
        request = HistoryRequest(after=after, limit=limit)
        page = await loaded(
            lambda: handle.query(ChatSessionWorkflow.history, request, rpc_timeout=QUERY_TIMEOUT)
        )
        if page.archived_in is None:
            return page
        closed = self._client.get_workflow_handle(handle.id, run_id=page.archived_in)
        older = await closed.query(
            ChatSessionWorkflow.history, request, rpc_timeout=ARCHIVE_QUERY_TIMEOUT
        )
        if older.messages and older.next is None:
            older.next = older.messages[-1].seq  # later messages are in later runs
        return older

    async def list_sessions(self, owner: str, limit: int) -> list[SessionSummary]:
        query = (
            f'{OWNER_ATTRIBUTE.name} = "{owner}" AND WorkflowType = "{WORKFLOW_TYPE}" '
            'AND ExecutionStatus != "ContinuedAsNew"'
        )
        latest: dict[str, SessionSummary] = {}
        async for run in self._client.list_workflows(query, limit=limit * 4):
            parsed = parse_workflow_id(run.id)
            if parsed is None or parsed[0] != owner:
                continue
            state = run.typed_search_attributes.get(STATUS_ATTRIBUTE) or "active"
            if run.status != WorkflowExecutionStatus.RUNNING and state in _LIVE_STATES:
                state = "ended"  # closed from outside (terminated, failed)
            summary = SessionSummary(
                session_id=parsed[1],
                status=state,
                model=await _model_of(run),
                started_at=run.start_time,
                closed_at=run.close_time,
            )
            current = latest.get(parsed[1])
            if current is None or summary.started_at > current.started_at:
                latest[parsed[1]] = summary
        ordered = sorted(latest.values(), key=lambda s: s.started_at, reverse=True)
        return ordered[:limit]

    def ui_url(self, owner: str, session_id: str) -> str:
        wf_id = quote(workflow_id(owner, session_id), safe="")
        return (
            f"{self._settings.temporal_ui_url}/namespaces/"
            f"{self._settings.temporal_namespace}/workflows/{wf_id}"
        )

    async def model_of(self, owner: str, session_id: str) -> str | None:
        """The session's model; None when the caller has no session of this id (in any state).
        Cached like every existence check, so it costs a live session nothing."""
        try:
            handle = await self._existing(owner, session_id)
        except ApiError as err:
            if err.status != 404:
                raise
            return None
        return self._known.get(handle.id, self._settings.default_model)

    # ---- helpers -----------------------------------------------------------------------

    async def _existing(self, owner: str, session_id: str) -> Handle:
        wf_id = workflow_id(owner, session_id)
        handle: Handle = self._client.get_workflow_handle_for(ChatSessionWorkflow.run, wf_id)
        if wf_id in self._known:
            self._known.move_to_end(wf_id)
            return handle
        try:
            description = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise not_found(session_id) from err
            raise
        memo = await description.memo()
        self._remember(wf_id, str(memo.get(_MODEL_MEMO, self._settings.default_model)))
        return handle

    def _remember(self, wf_id: str, model: str) -> None:
        self._known[wf_id] = model
        self._known.move_to_end(wf_id)
        while len(self._known) > _KNOWN_SESSIONS_CACHE:
            self._known.popitem(last=False)

    async def _resume_input(self, handle: Handle, owner: str, session_id: str) -> SessionInput:
        """Start input for the run after a closed one; it loads that run's state.

        If another request resumed the session meanwhile, the input is never used: the
        start attaches to the running workflow (USE_EXISTING).
        """
        description = await handle.describe()
        closed = description.status != WorkflowExecutionStatus.RUNNING
        return SessionInput(
            owner=owner,
            session_id=session_id,
            # A placeholder but for the limits: the old run's config is loaded.
            config=session_config(
                self._settings, self._known.get(handle.id, self._settings.default_model)
            ),
            resume=True,
            previous_run_id=description.run_id if closed else None,
            activity_task_queue=self._settings.activity_task_queue,
            count_sessions=self._quotas.counts_sessions,
        )

    def _start_options(self, owner: str, wf_id: str, model: str | None = None) -> dict[str, Any]:
        model = model or self._known.get(wf_id, self._settings.default_model)
        return {
            "id": wf_id,
            "task_queue": self._settings.task_queue,
            "search_attributes": TypedSearchAttributes(
                [SearchAttributePair(OWNER_ATTRIBUTE, owner)]
            ),
            "memo": {_MODEL_MEMO: model},
            "static_summary": f"chat session of **{owner}** · {model}",
        }


async def _model_of(run: WorkflowExecution) -> str | None:
    """The model memo; None when this process cannot read it (sealed with a key it lacks, or
    written by an incompatible version), so one unreadable run never breaks the whole list."""
    try:
        model: str | None = await run.memo_value(_MODEL_MEMO, default=None, type_hint=str)
    except Exception:  # decoding raises whatever the codec or converter raises
        log.warning("session %s: memo unreadable by this gateway", run.id)
        return None
    return model


def _log_context(owner: str, session_id: str, msg: SendMessage) -> dict[str, str]:
    """What the gateway's log lines about a message carry (never its text: common/logs.py)."""
    return {"user": owner, "session_id": session_id, "message_id": msg.message_id}
