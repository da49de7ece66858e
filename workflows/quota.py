"""One workflow per user (`quota:<user>`) holding the counters behind the per-user quotas.

The gateway asks it, by update, before queuing a message (`admit_message`: messages per
minute, tokens per day) and before a session starts or resumes (`reserve_session`: open
sessions). Refusals come from the update validators, so a refused request writes nothing to
history. Session workflows tell it, by signal from workflow code (durable, sent exactly once
even across crashes), each turn's tokens and when they open and close.

The limits travel with each request rather than living here, so a settings change applies at
once and the state is only counters: it is carried across continue-as-new.

- Messages per minute: a sliding window, "at most N in any 60 s"; the log holds at most N
  entries. Retry-After is when the oldest counted message leaves the window.
- Tokens per day: the UTC calendar day (predictable: everyone's quota resets at 00:00 UTC);
  a turn's tokens count on the day it ends. Retry-After is the time to the next midnight.
"""

import math
from datetime import UTC, datetime, time, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    # Pydantic models and constants only: no I/O, safe and faster to share with the host.
    from common.names import QUOTA_WORKFLOW_TYPE
    from workflows.quota_messages import (
        RATE_LIMITED,
        RECORD_USAGE,
        SESSION_CLOSED,
        SESSION_LIMIT,
        SESSION_OPENED,
        TOKEN_QUOTA_EXHAUSTED,
        AdmitMessage,
        AdmittedMessage,
        QuotaCounters,
        QuotaInput,
        QuotaView,
        ReserveSession,
        TurnUsage,
    )

MESSAGE_WINDOW = timedelta(minutes=1)
# A reserved slot whose session has not said it started by then is freed: the gateway that
# reserved it may have crashed before starting the session. A session that starts later
# still takes its slot back.
SESSION_START_GRACE = timedelta(minutes=5)


@workflow.defn(name=QUOTA_WORKFLOW_TYPE)
class UserQuotaWorkflow:
    @workflow.init
    def __init__(self, inp: QuotaInput) -> None:
        carried = inp.carried or QuotaCounters()
        self._recent = list(carried.recent)
        self._day = carried.day
        self._tokens = carried.tokens_today
        self._sessions = dict(carried.open_sessions)
        self._runs = carried.runs
        self._handled = 0  # updates and signals this run

    @workflow.run
    async def run(self, inp: QuotaInput) -> None:
        """Never ends by itself: it waits, and continues as new when its history is long."""
        await workflow.wait_condition(
            lambda: (
                self._handled >= inp.max_requests_per_run
                or workflow.info().is_continue_as_new_suggested()
            )
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            QuotaInput(
                user=inp.user,
                carried=self._counters(workflow.now()).model_copy(update={"runs": self._runs + 1}),
                max_requests_per_run=inp.max_requests_per_run,
            )
        )

    # ---- messages ----------------------------------------------------------------------

    @workflow.update(name="admit_message")
    def admit_message(self, req: AdmitMessage) -> QuotaView:
        now = workflow.now()
        self._recent = self._window(now)
        key = _key(req)
        if req.limits.messages_per_minute is not None and not self._admitted(key, now):
            self._recent.append(AdmittedMessage(at=now, key=key))
        self._handled += 1
        return self._view(now)

    @admit_message.validator
    def _validate_admit(self, req: AdmitMessage) -> None:
        now = workflow.now()
        tokens_limit = req.limits.tokens_per_day
        if tokens_limit is not None:
            used = self._tokens_on(now)
            if used >= tokens_limit:
                midnight = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
                raise _refusal(
                    f"You have used {used:,} of your {tokens_limit:,} model tokens for today "
                    "(UTC); the quota resets at 00:00 UTC, in {wait}.",
                    TOKEN_QUOTA_EXHAUSTED,
                    midnight - now,
                )
        rate = req.limits.messages_per_minute
        if rate is not None and not self._admitted(_key(req), now):
            window = self._window(now)
            if len(window) >= rate:
                # Admitted once enough of the counted messages have left the window.
                leaves = window[len(window) - rate].at + MESSAGE_WINDOW
                raise _refusal(
                    f"You have sent {len(window)} messages in the last minute; the limit is "
                    f"{rate} per minute. Retry in {{wait}}.",
                    RATE_LIMITED,
                    leaves - now,
                )

    @workflow.signal(name=RECORD_USAGE)
    def record_usage(self, usage: TurnUsage) -> None:
        now = workflow.now()
        self._tokens = self._tokens_on(now) + max(usage.tokens, 0)
        self._day = now.date()
        self._handled += 1

    # ---- sessions ----------------------------------------------------------------------

    @workflow.update(name="reserve_session")
    def reserve_session(self, req: ReserveSession) -> QuotaView:
        now = workflow.now()
        self._sessions = self._live_sessions(now)
        self._sessions.setdefault(req.session_id, now)
        self._handled += 1
        return self._view(now)

    @reserve_session.validator
    def _validate_reserve(self, req: ReserveSession) -> None:
        live_sessions = self._live_sessions(workflow.now())
        if req.session_id in live_sessions:
            return  # already counted: a retried create, or a resume racing another
        live = len(live_sessions)
        if live >= req.limit:
            raise ApplicationError(
                f"You have {live} open sessions, the most one user may have; end one, or "
                "let one expire, before starting or resuming another.",
                type=SESSION_LIMIT,
                non_retryable=True,
            )

    @workflow.signal(name=SESSION_OPENED)
    def session_opened(self, session_id: str) -> None:
        self._sessions[session_id] = None  # confirmed: it counts until it closes
        self._handled += 1

    @workflow.signal(name=SESSION_CLOSED)
    def session_closed(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._handled += 1

    # ---- reading -----------------------------------------------------------------------

    @workflow.query(name="usage")
    def usage(self) -> QuotaView:
        return self._view(workflow.now())

    @workflow.query(name="counters")
    def counters(self) -> QuotaCounters:
        return self._counters(workflow.now())

    # ---- state -------------------------------------------------------------------------

    def _window(self, now: datetime) -> list[AdmittedMessage]:
        return [m for m in self._recent if m.at > now - MESSAGE_WINDOW]

    def _admitted(self, key: str, now: datetime) -> bool:
        """A resend of a message counted in the window is not counted again."""
        return any(m.key == key for m in self._window(now))

    def _tokens_on(self, now: datetime) -> int:
        return self._tokens if self._day == now.date() else 0

    def _live_sessions(self, now: datetime) -> dict[str, datetime | None]:
        return {
            session_id: reserved
            for session_id, reserved in self._sessions.items()
            if reserved is None or now - reserved < SESSION_START_GRACE
        }

    def _counters(self, now: datetime) -> QuotaCounters:
        return QuotaCounters(
            recent=self._window(now),
            day=now.date(),
            tokens_today=self._tokens_on(now),
            open_sessions=self._live_sessions(now),
            runs=self._runs,
        )

    def _view(self, now: datetime) -> QuotaView:
        return QuotaView(
            messages_last_minute=len(self._window(now)),
            tokens_today=self._tokens_on(now),
            open_sessions=len(self._live_sessions(now)),
            runs=self._runs,
        )


def _key(req: AdmitMessage) -> str:
    return f"{req.session_id}/{req.message_id}"


def _refusal(template: str, kind: str, wait: timedelta) -> ApplicationError:
    """A refusal whose `next_retry_delay` becomes the HTTP Retry-After (whole seconds)."""
    seconds = max(1, math.ceil(wait.total_seconds()))
    return ApplicationError(
        template.format(wait=_duration(seconds)),
        type=kind,
        non_retryable=True,
        next_retry_delay=timedelta(seconds=seconds),
    )


def _duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
