"""The chat session workflow: one per session, holding the conversation in durable state.

Messages arrive by signal (`send_message`) or update (`send_message_and_wait`); both go
through `_accept`, which de-duplicates by message id and queues. One loop runs the turns,
one at a time in arrival order, expires the session after inactivity, and continues as new
once the run's history is long enough.

When the gateway asks for it (quota settings on), the session tells its owner's quota
workflow (workflows/quota.py) each turn's tokens and when it opens and closes, by signals from
workflow code: durable and sent once, even if a worker or the gateway crashes.
"""

import asyncio
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    # Pydantic models and constants only: no I/O, safe and faster to share with the host.
    from common.ids import ID_PATTERN, is_valid_id, quota_workflow_id
    from common.names import STATUS_ATTRIBUTE, WORKFLOW_TYPE
    from workflows.context import digest, fit_context
    from workflows.messages import (
        MAX_CONTENT_CHARS,
        MAX_QUEUED_MESSAGES,
        MAX_TOOLS_PER_SESSION,
        ApprovalState,
        ArchivedRun,
        CarriedState,
        ChatMessage,
        CompactionRequest,
        CompactionSource,
        ContextMessage,
        HistoryPage,
        HistoryRequest,
        ImportBatch,
        ImportDone,
        LLMContextRequest,
        LLMTurnInput,
        LLMTurnResult,
        PendingApproval,
        PreviousSessionRequest,
        QueuedMessage,
        RecordedToolCall,
        Reply,
        ReplyLookup,
        SendMessage,
        SessionInput,
        SessionState,
        SessionStatus,
        SetTools,
        Summary,
        SummaryResult,
        ToolCall,
        ToolCallInput,
        ToolDecision,
        ToolOutcome,
        ToolPolicy,
        TurnView,
        TurnViewRequest,
        Usage,
    )
    from workflows.metrics import SessionMetrics, TurnOutcomeLabel
    from workflows.quota_messages import (
        RECORD_USAGE,
        SESSION_CLOSED,
        SESSION_OPENED,
        TurnUsage,
    )
    from workflows.tool_calls import denied_outcome, short_arguments, unavailable_outcome
    from workflows.transcript import CARRY_MAX_CHARS, Transcript, run_holding

LLM_START_TO_CLOSE = timedelta(minutes=10)
LLM_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
LLM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
)
TOOL_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
TOOL_START_TO_CLOSE_MARGIN = timedelta(seconds=10)
TOOL_MIN_ATTEMPTS = 3  # a worker lost mid-call is retried even for a single-attempt tool
COMPACTION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=3,
)
COMPACTION_PAUSE_TURNS = 10  # after a failed compaction, turns before the next try
# Of the prompt budget, how much of the oldest messages that still fit a compaction summarises
# as well as those that no longer fit. Summarising only the overflow meant a compaction every
# few turns once the window was full (each a model call over a whole window, plus its summary
# in history); this way the prompt has room for half a window of turns before the next one.
COMPACT_AHEAD = 0.5
# Recorded histories from before it took neither step: compaction ahead of need (above), and
# no search-attribute upsert when the status it sets is the one the run already has.
HISTORY_TRIM_PATCH = "history-trim"
MAX_HISTORY_PAGE = 500
MAX_IMPORT_BATCH = 500  # messages per `import_messages` update
IMPORT_CHARS_PER_RUN = 1_000_000  # an import continues as new past this, like turns do
INLINE_CHARS = 512
"""Longer texts are written to history once: a long user message is not repeated in the
model call's input (the activity reads it by query), a long reply not in the send's result
(the gateway reads it by query)."""
# Resends of a message are recognised this far back once the message is no longer held.
MAX_ANSWERED_IDS = 2_000

# ApplicationError types raised by handlers; the gateway maps them to HTTP statuses.
INVALID_MESSAGE = "InvalidMessage"
SESSION_BUSY = "SessionBusy"
UNKNOWN_TOOL_CALL = "UnknownToolCall"
TOOL_CALL_DECIDED = "ToolCallDecided"
SESSION_FULL = "SessionFull"
TURN_IN_PROGRESS = "TurnInProgress"
TURN_IN_PROGRESS_MESSAGE = (
    "a reply is being generated and this session takes one message at a time "
    "(busy_policy reject); send again once it is answered"
)
# Raised by queries while a resumed run loads its history: until then its state reads as empty.
SESSION_LOADING = "SessionLoading"
LOADING_MESSAGE = "the session is loading its history; retry in a moment"


def session_full_message(limit: int) -> str:
    """Why a message past the session's `max_messages` is refused (the gateway says it too)."""
    return f"This session has reached its limit of {limit} messages; start a new session."


@dataclass(frozen=True)
class _ApprovalWait:
    message_id: str
    turn: int
    requested_at: datetime
    deadline: datetime


@dataclass
class _TurnOutcome:
    content: str
    model: str
    usage: Usage | None
    error: str | None = None
    attempt: int | None = None
    outcome: TurnOutcomeLabel = "ok"


@workflow.defn(name=WORKFLOW_TYPE)
class ChatSessionWorkflow:
    @workflow.init
    def __init__(self, inp: SessionInput) -> None:
        self._owner = inp.owner
        self._session_id = inp.session_id
        self._config = inp.config
        self._activity_queue = inp.activity_task_queue
        self._count_sessions = inp.count_sessions
        self._transcript = Transcript()  # the messages this run holds (workflows/transcript.py)
        self._archive: list[ArchivedRun] = []  # earlier runs, for the older messages
        self._queue: deque[QueuedMessage] = deque()
        self._user_seq: dict[str, int] = {}  # user message id -> seq
        self._reply_seq: dict[str, int] = {}  # user message id -> seq of its reply
        self._turns = 0
        self._turns_this_run = 0
        self._usage = Usage()
        self._runs = 1
        self._created_at = workflow.now()
        self._last_activity = workflow.now()
        self._state: SessionState = "active"
        self._end_requested = False
        self._ready = False  # false until a resumed run has loaded its previous history
        self._alarm: asyncio.Future[None] = _rung()
        self._approval_calls: dict[str, RecordedToolCall] = {}  # this turn's, by call id
        self._approval_wait: _ApprovalWait | None = None  # set while the turn waits for them
        self._model_step: int | None = None  # the step of this turn whose model call runs
        self._model_call: workflow.ActivityHandle[LLMTurnResult] | None = None
        self._interrupted_by: str | None = None  # the message that cancelled this turn's call
        self._summary: Summary | None = None  # compaction's summary of the older messages
        self._compact_upto: int | None = None  # set when messages up to it should be summarised
        self._compaction: asyncio.Task[Summary | None] | None = None  # running beside turns
        self._no_compaction_before = 0  # the turn after which compaction may be tried again
        self._last_turn_usage: Usage | None = None
        self._importing = inp.importing
        self._imported_chars = 0  # in this run
        self._metrics: SessionMetrics | None = None  # made on first use (workflows/metrics.py)
        if inp.carried is not None:
            self._restore(inp.carried)
            self._ready = True

    @workflow.run
    async def run(self, inp: SessionInput) -> SessionStatus:
        if not self._ready:
            if inp.resume:
                previous = await workflow.execute_activity(
                    "load_previous_session",
                    PreviousSessionRequest(
                        workflow_id=workflow.info().workflow_id, run_id=inp.previous_run_id
                    ),
                    result_type=CarriedState | None,  # type: ignore[arg-type]
                    start_to_close_timeout=timedelta(seconds=30),
                    summary="load the previous run's history",
                )
                if previous is not None:
                    self._restore(previous)
                    self._runs += 1
            self._ready = True
        if self._count_sessions and inp.carried is None:  # created or resumed, not continued
            await self._tell_quota(SESSION_OPENED, self._session_id)
        self._set_state("active")
        workflow.set_current_details(self._details())

        while True:
            await self._serve()
            # Closing: every handler must finish first, and one may have queued a message.
            await workflow.wait_condition(
                lambda: workflow.all_handlers_finished() or bool(self._queue)
            )
            if not self._queue and await self._report_closed():
                return self._status()
            self._end_requested = False  # a message after the end request reopens

    async def _serve(self) -> None:
        """Run turns until the session ends or expires; continue as new when due."""
        while True:
            if self._compaction is not None and self._compaction.done():
                self._adopt_summary(self._compaction.result())
                continue
            if self._compact_upto is not None and self._compaction is None:
                upto, self._compact_upto = self._compact_upto, None
                self._compaction = asyncio.create_task(self._compact(upto))
                continue
            if self._queue and not self._importing:
                await self._run_turn(self._queue.popleft())
                continue
            if self._compaction is not None and (
                self._end_requested or self._continue_as_new_due()
            ):
                await self._compaction  # its summary goes with the session
                continue
            if self._end_requested:
                self._set_state("ended")
                return
            if self._continue_as_new_due():
                # An end request's handler waits for the end, so it must wake this wait too.
                await workflow.wait_condition(
                    lambda: (
                        workflow.all_handlers_finished() or bool(self._queue) or self._end_requested
                    )
                )
                if (not self._queue or self._importing) and not self._end_requested:
                    workflow.continue_as_new(
                        SessionInput(
                            owner=self._owner,
                            session_id=self._session_id,
                            config=self._config,
                            carried=self._carry(),
                            activity_task_queue=self._activity_queue,
                            count_sessions=self._count_sessions,
                            importing=self._importing,
                        )
                    )
                continue
            remaining = (self._expires_at() - workflow.now()).total_seconds()
            if remaining <= 0:
                self._set_state("expired")
                return
            self._arm_inactivity_alarm(remaining)
            # When the alarm rings the loop re-checks: a message arriving as it rang counts.
            await workflow.wait_condition(
                lambda: (
                    (bool(self._queue) and not self._importing)
                    or self._end_requested
                    or self._alarm.done()
                    or (self._importing and self._continue_as_new_due())
                    or (self._compact_upto is not None and self._compaction is None)
                    or (self._compaction is not None and self._compaction.done())
                )
            )

    def _arm_inactivity_alarm(self, seconds: float) -> None:
        """One timer per inactivity period, not one per turn.

        The timer is left running across turns and only re-armed (for the time that is left)
        when it rings, so a busy session writes no timer events into its history.
        """
        if self._alarm.done():
            self._alarm = asyncio.create_task(workflow.sleep(seconds, summary="inactivity timeout"))

    async def _run_turn(self, item: QueuedMessage) -> None:
        self._turns += 1
        self._turns_this_run += 1
        turn = self._turns
        user = self._append(
            id=item.message_id,
            role="user",
            content=item.content,
            created_at=item.received_at,
            turn=turn,
        )
        self._user_seq[item.message_id] = user.seq
        self._state = "working"
        self._approval_calls.clear()
        outcome = await self._converse(item, turn, user)
        reply = self._append(
            id=f"{item.message_id}.reply",
            role="assistant",
            content=outcome.content,
            created_at=workflow.now(),
            turn=turn,
            reply_to=item.message_id,
            model=outcome.model,
            usage=outcome.usage,
            error=outcome.error,
            attempt=outcome.attempt,
        )
        self._reply_seq[item.message_id] = reply.seq
        self._measured().turn(
            outcome.outcome, outcome.model, reply.created_at - item.received_at, outcome.usage
        )
        self._last_turn_usage = outcome.usage
        self._last_activity = workflow.now()
        self._state = "active"
        workflow.set_current_details(self._details())
        tokens = outcome.usage.total_tokens if outcome.usage else 0
        if item.count_tokens and tokens:
            usage = TurnUsage(
                session_id=self._session_id, message_id=item.message_id, tokens=tokens
            )
            await self._tell_quota(RECORD_USAGE, usage)

    async def _converse(self, item: QueuedMessage, turn: int, user: ChatMessage) -> _TurnOutcome:
        """Model, then the tools it asks for, then the model again, up to `max_tool_steps`."""
        usage: Usage | None = None
        model = self._config.model
        steps = max(self._config.max_tool_steps, 1)
        for step in range(1, steps + 1):
            try:
                result = await self._call_model(item, turn, user, step)
            except ActivityError as err:
                if self._interrupted_by is not None:
                    error = (
                        f"Interrupted by message {self._interrupted_by!r} before the reply "
                        "was done."
                    )
                    self._interrupted_by = None
                    return _TurnOutcome("", model, usage, error, outcome="interrupted")
                return _TurnOutcome("", model, usage, _describe_failure(err), outcome="error")
            model = result.model
            self._note_context(result)
            usage = result.usage if usage is None else usage.plus(result.usage)
            self._usage = self._usage.plus(result.usage)
            if not result.tool_calls:
                return _TurnOutcome(result.content, model, usage, attempt=result.attempt)
            if step == steps:
                return _TurnOutcome(
                    result.content,
                    model,
                    usage,
                    f"Stopped after {steps} model calls in one turn (the session's "
                    "max_tool_steps) while the model still wanted tools; send another message "
                    "to let it continue.",
                    result.attempt,
                    outcome="step_limit",
                )
            await self._run_tools(item, turn, step, result)
        raise AssertionError("unreachable: the last step always returns")

    async def _call_model(
        self, item: QueuedMessage, turn: int, user: ChatMessage, step: int
    ) -> LLMTurnResult:
        model = self._config.model
        first = step == 1
        previous = self._transcript.get(user.seq - 1) if first else None
        self._model_step = step
        try:
            return await self._model_activity(item, turn, user, step, model, previous)
        finally:
            self._model_step = None

    async def _model_activity(
        self,
        item: QueuedMessage,
        turn: int,
        user: ChatMessage,
        step: int,
        model: str,
        previous: ChatMessage | None,
    ) -> LLMTurnResult:
        first = step == 1
        self._model_call = workflow.start_activity(
            "generate_reply",
            LLMTurnInput(
                turn=turn,
                upto_seq=user.seq if first else self._transcript.last_seq,
                model=model,
                user_message=item.content if first and len(item.content) <= INLINE_CHARS else "",
                user_digest=(
                    digest(item.content) if first and len(item.content) > INLINE_CHARS else None
                ),
                system_prompt=self._config.system_prompt if user.seq == 1 else None,
                previous_digest=(
                    digest(previous.content) if previous and previous.error is None else None
                ),
                step=step,
                tools=self._config.tools,
                summary_upto=self._summary.upto_seq if self._summary else 0,
                result_digests=[] if first else self._last_result_digests(),
            ),
            result_type=LLMTurnResult,
            task_queue=self._activity_queue,
            start_to_close_timeout=LLM_START_TO_CLOSE,
            heartbeat_timeout=LLM_HEARTBEAT_TIMEOUT,
            retry_policy=LLM_RETRY,
            summary=f"{model} · turn {turn}" + (f" · step {step}" if not first else ""),
        )
        try:
            return await self._model_call
        finally:
            self._model_call = None

    def _note_context(self, result: LLMTurnResult) -> None:
        """Ask for compaction once enough messages have fallen out of the prompt unsummarised.

        Not while one runs: this call was measured against the summary it will replace (its
        summary is adopted only between turns, so the next turn measures afresh)."""
        if (
            not self._config.compaction
            or self._compaction is not None
            or result.context_from_seq is None
            or result.prompt_budget <= 0
            or self._turns < self._no_compaction_before
        ):
            return
        if result.dropped_tokens >= self._config.compaction_threshold * result.prompt_budget:
            upto = result.context_from_seq - 1
            if workflow.patched(HISTORY_TRIM_PATCH):
                upto = self._ahead_of(upto, result)
            self._compact_upto = max(self._compact_upto or 0, upto)

    def _ahead_of(self, upto: int, result: LLMTurnResult) -> int:
        """The end of the last turn before `COMPACT_AHEAD` of the prompt budget's worth of the
        messages after `upto`, priced by the tokens per character the prompt just measured.
        Never the current turn (the newest user message onwards)."""
        held = self._transcript.between(upto, self._transcript.last_seq)
        chars = sum(len(message.content) for message in held)
        if not held or chars == 0 or result.usage.prompt_tokens <= 0:
            return upto
        per_char = min(result.usage.prompt_tokens / chars, 1.0)
        goal = COMPACT_AHEAD * result.prompt_budget
        current = max((m.seq for m in held if m.role == "user"), default=upto + 1)
        ahead, spent = upto, 0.0
        for message in held:
            if message.seq >= current or spent >= goal:
                break
            if message.role == "user":
                ahead = message.seq - 1  # a turn boundary: everything before this message
            spent += len(message.content) * per_char
        return ahead

    async def _compact(self, upto: int) -> Summary | None:
        """A new running summary covering messages up to `upto`, or None if that failed.

        It runs beside turns (a message never waits for it); its summary is adopted between
        turns. A failure leaves the session as it was (the prompt just holds fewer messages)
        and pauses compaction for a few turns."""
        since = self._summary.upto_seq if self._summary else 0
        if upto <= since:
            return None
        model = self._config.compaction_model or self._config.model
        try:
            result: SummaryResult = await workflow.execute_activity(
                "summarize_history",
                CompactionRequest(
                    after=since,
                    upto=upto,
                    model=model,
                ),
                result_type=SummaryResult,
                task_queue=self._activity_queue,
                start_to_close_timeout=LLM_START_TO_CLOSE,
                heartbeat_timeout=LLM_HEARTBEAT_TIMEOUT,
                retry_policy=COMPACTION_RETRY,
                summary=f"compaction · {model} · messages {since + 1}-{upto}",
            )
        except ActivityError as err:
            workflow.logger.warning("compaction of messages %d-%d failed: %s", since + 1, upto, err)
            self._no_compaction_before = self._turns + COMPACTION_PAUSE_TURNS
            return None
        return Summary(
            text=result.text,
            upto_seq=min(result.upto_seq or upto, upto),
            created_at=workflow.now(),
            model=result.model,
            usage=result.usage,
        )

    def _adopt_summary(self, summary: Summary | None) -> None:
        self._compaction = None
        if summary is None:
            return
        self._summary = summary
        if summary.usage is not None:
            self._usage = self._usage.plus(summary.usage)
            self._measured().tokens(summary.model or self._config.model, summary.usage)
        workflow.set_current_details(self._details())

    def _measured(self) -> SessionMetrics:
        """The metric instruments; they record nothing while the workflow replays."""
        if self._metrics is None:
            self._metrics = SessionMetrics(workflow.metric_meter())
        return self._metrics

    def _last_result_digests(self) -> list[str]:
        results: list[str] = []
        for message in reversed(self._transcript):
            if message.role != "tool":
                break
            results.insert(0, digest(message.content))
        return results

    async def _run_tools(
        self, item: QueuedMessage, turn: int, step: int, result: LLMTurnResult
    ) -> None:
        """Record the calls, wait for any approvals, run them in parallel, record results.

        Results are appended in the order the model asked, after all calls finish, so each
        call is followed by its result whatever order they complete in.
        """
        policies = result.tool_policies
        calls = [
            RecordedToolCall(
                **call.model_dump(),
                approval="pending" if _policy(policies, call).needs_approval else None,
            )
            for call in result.tool_calls
        ]
        self._append(
            id=f"{item.message_id}.s{step}",
            role="assistant",
            content=result.content,
            created_at=workflow.now(),
            turn=turn,
            model=result.model,
            tool_calls=calls,
            attempt=result.attempt,
        )
        if any(call.approval == "pending" for call in calls):
            await self._await_approvals(item, turn, calls)
        outcomes = await asyncio.gather(
            *(self._run_tool(turn, call, _policy(policies, call)) for call in calls)
        )
        for index, (call, outcome) in enumerate(zip(calls, outcomes, strict=True)):
            self._append(
                id=f"{item.message_id}.s{step}.{index}",
                role="tool",
                content=outcome.content,
                created_at=workflow.now(),
                turn=turn,
                tool_call_id=call.id,
                tool_name=call.name,
                is_error=outcome.is_error,
                truncated=outcome.truncated,
            )

    async def _run_tool(self, turn: int, call: RecordedToolCall, policy: ToolPolicy) -> ToolOutcome:
        if call.approval in ("denied", "timed_out"):
            return denied_outcome(call)
        if call.name not in self._config.tools:
            return unavailable_outcome(call.name, self._config.tools)
        try:
            outcome: ToolOutcome = await workflow.execute_activity(
                "run_tool",
                ToolCallInput(
                    owner=self._owner,
                    session_id=self._session_id,
                    workflow_id=workflow.info().workflow_id,
                    turn=turn,
                    call=ToolCall(id=call.id, name=call.name, arguments=call.arguments),
                    max_attempts=policy.max_attempts,
                ),
                result_type=ToolOutcome,
                task_queue=self._activity_queue,
                start_to_close_timeout=(
                    timedelta(seconds=policy.timeout_seconds) + TOOL_START_TO_CLOSE_MARGIN
                ),
                heartbeat_timeout=TOOL_HEARTBEAT_TIMEOUT,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_interval=timedelta(seconds=10),
                    maximum_attempts=max(policy.max_attempts, TOOL_MIN_ATTEMPTS),
                ),
                summary=f"{call.name}({short_arguments(call.arguments)}) · turn {turn}",
            )
            return outcome
        except ActivityError as err:
            cause = err.cause.message if isinstance(err.cause, ApplicationError) else err.cause
            return ToolOutcome(content=f"Tool {call.name!r} failed: {cause or err}", is_error=True)

    async def _await_approvals(
        self, item: QueuedMessage, turn: int, calls: list[RecordedToolCall]
    ) -> None:
        """Wait for the owner's decisions; whatever is undecided at the deadline is denied.

        The wait is a durable timer, so it survives worker and server restarts, and the
        session cannot expire meanwhile: expiry is only checked between turns.
        """
        timeout = timedelta(seconds=self._config.approval_timeout_seconds)
        self._approval_calls.update({c.id: c for c in calls if c.approval == "pending"})
        self._approval_wait = _ApprovalWait(
            item.message_id, turn, workflow.now(), workflow.now() + timeout
        )
        self._set_state("awaiting_approval")
        workflow.set_current_details(self._details())
        try:
            await workflow.wait_condition(
                lambda: not self._pending_calls(),
                timeout=timeout,
                timeout_summary="approval deadline",
            )
        except TimeoutError:
            reason = f"No decision within {self._config.approval_timeout_seconds} s."
            for call in self._pending_calls():
                _decide(call, "timed_out", reason)
        self._approval_wait = None
        self._state = "working"
        # Visibility shows a turn in progress as active, as it does for turns without tools.
        workflow.upsert_search_attributes([STATUS_ATTRIBUTE.value_set("active")])
        workflow.set_current_details(self._details())

    # ---- messages in -------------------------------------------------------------------

    @workflow.signal(name="send_message")
    async def send_message(self, msg: SendMessage) -> None:
        """Fire-and-forget send (the Temporal CLI and UI can use it too)."""
        problem = self._problem_with(msg)
        if problem is not None:
            workflow.logger.warning("dropped an invalid message signal: %s", problem)
            return
        await workflow.wait_condition(lambda: self._ready)
        if self._full(msg):
            workflow.logger.warning(
                "dropped a message signal past max_messages: %s", msg.message_id
            )
            return
        self._accept(msg)

    @workflow.update(name="send_message_and_wait")
    async def send_message_and_wait(self, msg: SendMessage) -> Reply:
        """Send and wait for the reply; a resend of the same id returns the same reply."""
        await workflow.wait_condition(lambda: self._ready)
        if self._full(msg):  # a resumed run knows its count only once it has loaded history
            raise self._full_error()
        self._accept(msg)
        await workflow.wait_condition(lambda: msg.message_id in self._reply_seq)
        reply = self._reply_to(msg.message_id)
        return Reply(
            message_id=msg.message_id,
            reply=reply if reply is None or len(reply.content) <= INLINE_CHARS else None,
            reply_seq=self._reply_seq[msg.message_id],
        )

    @send_message_and_wait.validator
    def _validate_send(self, msg: SendMessage) -> None:
        problem = self._problem_with(msg)
        if problem is not None:
            raise ApplicationError(problem, type=INVALID_MESSAGE, non_retryable=True)
        if self._rejects(msg):
            raise ApplicationError(
                TURN_IN_PROGRESS_MESSAGE,
                type=TURN_IN_PROGRESS,
                non_retryable=True,
            )
        if self._importing:
            raise ApplicationError(
                "this session is still being imported; send messages once it is done",
                type=SESSION_BUSY,
                non_retryable=True,
            )
        if len(self._queue) >= MAX_QUEUED_MESSAGES and not self._known(msg.message_id):
            raise ApplicationError(
                f"{len(self._queue)} messages are already waiting; retry later",
                type=SESSION_BUSY,
                non_retryable=True,
            )
        if self._full(msg):
            raise self._full_error()

    @workflow.update(name="import_messages")
    def import_messages(self, batch: ImportBatch) -> SessionStatus:
        """Append exported messages as they were (the validator checks they continue the
        conversation); the session continues as new between batches when its run is full."""
        new = [m for m in batch.messages if m.seq > self._transcript.last_seq]
        for message in new:
            self._transcript.append(**message.model_dump(exclude={"seq"}))
            self._imported_chars += len(message.content)
            if message.role == "user":
                self._user_seq[message.id] = message.seq
            elif message.reply_to is not None:
                self._reply_seq[message.reply_to] = message.seq
            self._turns = max(self._turns, message.turn or 0)
        return self._status()

    @import_messages.validator
    def _validate_import(self, batch: ImportBatch) -> None:
        problem = self._import_problem(batch)
        if problem is not None:
            raise ApplicationError(problem, type=INVALID_MESSAGE, non_retryable=True)

    def _import_problem(self, batch: ImportBatch) -> str | None:
        if not self._importing:
            return "this session is not being imported"
        if len(batch.messages) > MAX_IMPORT_BATCH:
            return f"at most {MAX_IMPORT_BATCH} messages per batch"
        expected = batch.messages[0].seq if batch.messages else 0
        for message in batch.messages:
            if message.seq != expected:
                return f"message seqs must be consecutive: got {message.seq}, wanted {expected}"
            if len(message.content) > MAX_CONTENT_CHARS:
                return f"message {message.seq} is longer than {MAX_CONTENT_CHARS} characters"
            if message.role == "user" and not is_valid_id(message.id):
                return f"message {message.seq}: id must match {ID_PATTERN}"
            expected += 1
        if batch.messages and batch.messages[0].seq > self._transcript.last_seq + 1:
            return (
                f"the batch starts at message {batch.messages[0].seq}, but the session has "
                f"{self._transcript.last_seq}: send the batches in order"
            )
        return None

    @workflow.update(name="finish_import")
    def finish_import(self, done: ImportDone) -> SessionStatus:
        if self._importing:
            self._importing = False
            self._summary = done.summary
            self._usage = done.usage
            self._last_activity = workflow.now()
        return self._status()

    @workflow.update(name="end_session")
    async def end_session(self) -> SessionStatus:
        """End the session once queued messages are answered; a later message resumes it.

        Tool calls waiting for approval are denied: ending is the owner's answer to them.
        """
        # Like the message handlers, wait for a resumed run's history: a message sent before
        # this request (say, the signal that resumed the run) must be queued before it.
        await workflow.wait_condition(lambda: self._ready)
        self._end_requested = True
        for call in self._pending_calls():
            _decide(call, "denied", "The user ended the session.")
        await workflow.wait_condition(lambda: self._state == "ended" or not self._end_requested)
        return self._status()

    @workflow.update(name="decide_tool_call")
    def decide_tool_call(self, decision: ToolDecision) -> RecordedToolCall:
        """Approve or deny a call waiting for approval; repeating the same answer is a no-op."""
        call = self._approval_calls[decision.call_id]
        if call.approval == "pending":
            _decide(call, "approved" if decision.approve else "denied", decision.reason)
        return call

    @decide_tool_call.validator
    def _validate_decision(self, decision: ToolDecision) -> None:
        call = self._approval_calls.get(decision.call_id)
        if call is None:
            raise ApplicationError(
                f"no tool call {decision.call_id!r} is waiting for a decision in this session",
                type=UNKNOWN_TOOL_CALL,
                non_retryable=True,
            )
        wanted = "approved" if decision.approve else "denied"
        if call.approval not in ("pending", wanted):
            state = (call.approval or "decided").replace("_", " ")
            raise ApplicationError(
                f"tool call {decision.call_id!r} was already {state}",
                type=TOOL_CALL_DECIDED,
                non_retryable=True,
            )

    @workflow.update(name="set_tools")
    async def set_tools(self, req: SetTools) -> SessionStatus:
        """Replace the session's tools; a turn in progress uses them from its next model call.

        Waits for a resumed run's history, which would otherwise bring back the old tools."""
        await workflow.wait_condition(lambda: self._ready)
        self._config = self._config.model_copy(update={"tools": list(dict.fromkeys(req.tools))})
        return self._status()

    @set_tools.validator
    def _validate_tools(self, req: SetTools) -> None:
        if len(set(req.tools)) > MAX_TOOLS_PER_SESSION:
            raise ApplicationError(
                f"a session may have at most {MAX_TOOLS_PER_SESSION} tools",
                type=INVALID_MESSAGE,
                non_retryable=True,
            )
        bad = [name for name in req.tools if not is_valid_id(name)]
        if bad:
            raise ApplicationError(
                f"invalid tool names: {', '.join(repr(name) for name in bad[:5])}",
                type=INVALID_MESSAGE,
                non_retryable=True,
            )

    def _accept(self, msg: SendMessage) -> None:
        if self._known(msg.message_id):
            return
        if self._config.busy_policy == "interrupt" and self._model_call is not None:
            self._interrupted_by = msg.message_id
            self._model_call.cancel()
        self._queue.append(
            QueuedMessage(
                message_id=msg.message_id,
                content=msg.content,
                received_at=workflow.now(),
                count_tokens=msg.count_tokens,
            )
        )
        self._last_activity = workflow.now()
        if self._state in ("expired", "ended"):
            self._set_state("active")

    def _rejects(self, msg: SendMessage) -> bool:
        """busy_policy "reject": a new message while a turn runs or waits is refused."""
        busy = self._state in ("working", "awaiting_approval") or bool(self._queue)
        return self._config.busy_policy == "reject" and busy and not self._known(msg.message_id)

    def _known(self, message_id: str) -> bool:
        return (
            message_id in self._user_seq
            or message_id in self._reply_seq
            or any(q.message_id == message_id for q in self._queue)
        )

    def _full(self, msg: SendMessage) -> bool:
        """The session has all the user messages it may have, and this one is new."""
        limit = self._config.max_messages
        return (
            limit is not None
            and self._turns + len(self._queue) >= limit
            and not self._known(msg.message_id)
        )

    def _full_error(self) -> ApplicationError:
        assert self._config.max_messages is not None
        return ApplicationError(
            session_full_message(self._config.max_messages), type=SESSION_FULL, non_retryable=True
        )

    @staticmethod
    def _problem_with(msg: SendMessage) -> str | None:
        if not is_valid_id(msg.message_id):
            return f"message_id must match {ID_PATTERN}"
        if not msg.content.strip():
            return "content must not be empty"
        if len(msg.content) > MAX_CONTENT_CHARS:
            return f"content is longer than {MAX_CONTENT_CHARS} characters"
        return None

    # ---- queries -----------------------------------------------------------------------

    @workflow.query(name="status")
    def status(self) -> SessionStatus:
        self._check_loaded()
        return self._status()

    @workflow.query(name="history")
    def history(self, req: HistoryRequest) -> HistoryPage:
        """A page of messages after `req.after`; for older messages than this run holds,
        the closed run that holds them (the gateway reads on there)."""
        self._check_loaded()
        start = max(req.after, 0)
        if start + 1 < self._transcript.first_seq:
            run = run_holding(self._archive, start + 1)
            if run is not None:
                return HistoryPage(messages=[], archived_in=run.run_id)
            start = self._transcript.first_seq - 1  # not kept anywhere: skip to what is
        page = self._transcript.between(start, start + min(max(req.limit, 1), MAX_HISTORY_PAGE))
        # A page never ends between a tool call and its results.
        last = page[-1].seq if page else start
        while (following := self._transcript.get(last + 1)) and following.role == "tool":
            page.append(following)
            last += 1
        more = last < self._transcript.last_seq
        return HistoryPage(messages=page, next=last if page and more else None)

    @workflow.query(name="reply")
    def reply(self, message_id: str) -> ReplyLookup:
        self._check_loaded()
        if message_id in self._reply_seq:
            return ReplyLookup(
                message_id=message_id,
                state="done",
                reply=self._reply_to(message_id),
                reply_seq=self._reply_seq[message_id],
            )
        if message_id in self._user_seq:
            wait = self._approval_wait
            waiting = wait is not None and wait.message_id == message_id
            state = "awaiting_approval" if waiting else "working"
            return ReplyLookup(message_id=message_id, state=state)
        if any(q.message_id == message_id for q in self._queue):
            return ReplyLookup(message_id=message_id, state="queued")
        return ReplyLookup(message_id=message_id, state="unknown")

    @workflow.query(name="turn_view")
    def turn_view(self, req: TurnViewRequest) -> TurnView:
        self._check_loaded()
        message_id = req.message_id or self._message_of_turn(req.turn)
        if message_id is None:
            return TurnView(state="unknown")
        lookup = self.reply(message_id)
        if lookup.state in ("unknown", "queued"):
            return TurnView(message_id=message_id, state=lookup.state)
        user = self._transcript.get(self._user_seq.get(message_id, 0))
        if user is None:  # answered long ago; its messages are in an earlier run
            return TurnView(message_id=message_id, state="done")
        end = self._reply_seq.get(message_id, self._transcript.last_seq)
        return TurnView(
            message_id=message_id,
            turn=user.turn,
            state=lookup.state,
            model_step=self._model_step if lookup.state != "done" else None,
            messages=self._transcript.between(user.seq, end),
        )

    def _check_loaded(self) -> None:
        if not self._ready:
            raise ApplicationError(LOADING_MESSAGE, type=SESSION_LOADING, non_retryable=True)

    def _message_of_turn(self, turn: int | None) -> str | None:
        """The user message of `turn`; with no turn, the one being answered or next in line."""
        if turn is None:
            if self._state in ("working", "awaiting_approval"):
                turn = self._turns
            else:
                return self._queue[0].message_id if self._queue else None
        for message in reversed(self._transcript):
            if message.role == "user" and message.turn == turn:
                return message.id
            if message.turn is not None and message.turn < turn:
                break
        return None

    @workflow.query(name="llm_context")
    def llm_context(self, req: LLMContextRequest) -> list[ContextMessage]:
        """The prompt for a turn: system prompt, running summary, then the newest messages
        that fit; messages the summary covers are left out.

        Read by the LLM activity, so the transcript never passes through activity inputs.
        """
        since = self._summary.upto_seq if self._summary else 0
        picked = fit_context(
            [
                _to_context(m)
                for m in self._transcript.between(since, req.upto_seq)
                if m.error is None
            ],
            req.max_chars,
        )
        if self._summary:
            picked.insert(0, _summary_message(self._summary))
        if self._config.system_prompt:
            picked.insert(0, ContextMessage(role="system", content=self._config.system_prompt))
        return picked

    @workflow.query(name="compaction_source")
    def compaction_source(self, req: CompactionRequest) -> CompactionSource:
        """What compaction summarises: the current summary and the messages it adds."""
        return CompactionSource(
            summary=self._summary.text if self._summary else None,
            messages=[
                _to_context(m)
                for m in self._transcript.between(req.after, req.upto)
                if m.error is None
            ],
        )

    @workflow.query(name="snapshot")
    def snapshot(self) -> CarriedState:
        return self._carry()

    # ---- state -------------------------------------------------------------------------

    def _reply_to(self, message_id: str) -> ChatMessage | None:
        """The reply, if this run holds it (an old one is read through `history`)."""
        return self._transcript.get(self._reply_seq[message_id])

    def _append(self, **fields: Any) -> ChatMessage:
        return self._transcript.append(**fields)

    def _restore(self, carried: CarriedState) -> None:
        # Limits come from this run's input: a resumed session gets the deployment's current ones.
        self._config = carried.config.model_copy(
            update={
                "max_turns_per_run": self._config.max_turns_per_run,
                "max_messages": self._config.max_messages,
                "carry_max_chars": self._config.carry_max_chars,
            }
        )
        self._transcript = Transcript(
            carried.messages,
            last_seq=carried.message_count if carried.message_count is not None else 0,
        )
        self._archive = list(carried.archive)
        self._reply_seq.update(carried.answered)
        self._queue = deque(carried.queue)
        self._turns = carried.turns
        self._usage = carried.usage
        self._created_at = carried.created_at
        self._last_activity = max(carried.last_activity_at, self._last_activity)
        self._runs = carried.runs
        self._summary = carried.summary
        for message in self._transcript:
            if message.role == "user":
                self._user_seq[message.id] = message.seq
            elif message.reply_to is not None:
                self._reply_seq[message.reply_to] = message.seq

    def _carry(self) -> CarriedState:
        """What the next run needs: the messages the summary does not cover (capped), and
        where the others are. Also the `snapshot` query's answer, so it must not change state."""
        held = self._transcript
        tail = held.tail(
            self._summary.upto_seq if self._summary else 0,
            min(self._config.carry_max_chars, CARRY_MAX_CHARS),
        )
        first_kept = tail[0].seq if tail else held.last_seq + 1
        archive = list(self._archive)
        if len(held) and held.first_seq < first_kept:
            archive.append(
                ArchivedRun(
                    run_id=workflow.info().run_id,
                    first_seq=held.first_seq,
                    last_seq=held.last_seq,
                )
            )
        answered = {
            message_id: seq
            for message_id, seq in self._reply_seq.items()
            if self._user_seq.get(message_id, 0) < first_kept
        }
        return CarriedState(
            config=self._config,
            messages=tail,
            queue=list(self._queue),
            turns=self._turns,
            usage=self._usage,
            created_at=self._created_at,
            last_activity_at=self._last_activity,
            runs=self._runs,
            summary=self._summary,
            message_count=held.last_seq,
            archive=archive,
            answered=dict(list(answered.items())[-MAX_ANSWERED_IDS:]),
        )

    def _pending_calls(self) -> list[RecordedToolCall]:
        return [c for c in self._approval_calls.values() if c.approval == "pending"]

    def _pending_approvals(self) -> list[PendingApproval]:
        wait = self._approval_wait
        if wait is None:
            return []
        return [
            PendingApproval(
                call_id=c.id,
                name=c.name,
                arguments=c.arguments,
                message_id=wait.message_id,
                turn=wait.turn,
                requested_at=wait.requested_at,
                deadline=wait.deadline,
            )
            for c in self._pending_calls()
        ]

    async def _report_closed(self) -> bool:
        """Tell the owner's quota workflow this session closes; False if a message came in
        meanwhile (the session then stays open and says so)."""
        if not self._count_sessions:
            return True
        await self._tell_quota(SESSION_CLOSED, self._session_id)
        await workflow.wait_condition(lambda: workflow.all_handlers_finished() or bool(self._queue))
        if not self._queue:
            return True
        await self._tell_quota(SESSION_OPENED, self._session_id)
        return False

    async def _tell_quota(self, signal: str, arg: Any) -> None:
        """Signal the owner's quota workflow: durable, and sent once however often this replays.

        It exists whenever the gateway asked for a report (it reserved or admitted through it);
        if an operator terminated it, the report is lost and the session carries on.
        """
        quota = workflow.get_external_workflow_handle(quota_workflow_id(self._owner))
        try:
            await quota.signal(signal, arg)
        except FailureError as err:
            workflow.logger.warning("could not tell %s %s: %s", quota.id, signal, err)

    def _continue_as_new_due(self) -> bool:
        return (
            workflow.info().is_continue_as_new_suggested()
            or self._turns_this_run >= self._config.max_turns_per_run
            or self._imported_chars >= IMPORT_CHARS_PER_RUN
        )

    def _expires_at(self) -> datetime:
        return self._last_activity + timedelta(seconds=self._config.inactivity_timeout_seconds)

    def _set_state(self, state: SessionState) -> None:
        """The state, and the `ChatStatus` search attribute when it changes (a continued run
        inherits its predecessor's, so a run that starts as it ended writes nothing)."""
        self._state = state
        current = workflow.info().typed_search_attributes.get(STATUS_ATTRIBUTE)  # upserts too
        if state == current and workflow.patched(HISTORY_TRIM_PATCH):
            return
        workflow.upsert_search_attributes([STATUS_ATTRIBUTE.value_set(state)])

    def _status(self) -> SessionStatus:
        return SessionStatus(
            owner=self._owner,
            session_id=self._session_id,
            status=self._state,
            model=self._config.model,
            system_prompt=self._config.system_prompt,
            inactivity_timeout_seconds=self._config.inactivity_timeout_seconds,
            turns=self._turns,
            messages=self._transcript.last_seq,
            queued=len(self._queue),
            created_at=self._created_at,
            last_activity_at=self._last_activity,
            expires_at=self._expires_at() if self._state in ("active", "working") else None,
            usage=self._usage,
            runs=self._runs,
            tools=self._config.tools,
            pending_approvals=self._pending_approvals(),
            max_messages=self._config.max_messages,
            busy_policy=self._config.busy_policy,
            summary=self._summary,
            last_turn_usage=self._last_turn_usage,
        )

    def _details(self) -> str:
        details = (
            f"**{self._owner}** · {self._config.model} · {self._turns} turns · "
            f"{self._usage.total_tokens} tokens"
        )
        if self._pending_calls():
            waiting = ", ".join(f"`{c.name}` ({c.id})" for c in self._pending_calls())
            details += f"\n\nwaiting for approval: {waiting}"
        return details


def _decide(call: RecordedToolCall, approval: ApprovalState, reason: str | None) -> None:
    call.approval = approval
    call.decision_reason = reason


def _policy(policies: dict[str, ToolPolicy], call: ToolCall) -> ToolPolicy:
    return policies.get(call.name) or ToolPolicy()


def _to_context(message: ChatMessage) -> ContextMessage:
    return ContextMessage(
        role=message.role,
        content=message.content,
        tool_calls=[
            ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in message.tool_calls
        ],
        tool_call_id=message.tool_call_id,
        is_error=message.is_error,
        seq=message.seq,
    )


def _summary_message(summary: Summary) -> ContextMessage:
    return ContextMessage(
        role="system", content=f"Summary of the earlier conversation:\n{summary.text}"
    )


def _rung() -> "asyncio.Future[None]":
    """An alarm that has already rung, so the first idle wait arms a real one."""
    future: asyncio.Future[None] = asyncio.get_event_loop().create_future()
    future.set_result(None)
    return future


def _describe_failure(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return f"The model call failed: {cause.message}"
    return f"The model call failed: {cause or err}"
