"""The messages of the per-user quota workflow (workflows/quota.py), shared with the gateway
and the session workflow. Fields are only ever added, with defaults."""

from datetime import date, datetime

from pydantic import BaseModel, Field

# ApplicationError types the quota workflow raises; the gateway maps them to HTTP statuses.
RATE_LIMITED = "RateLimited"
TOKEN_QUOTA_EXHAUSTED = "TokenQuotaExhausted"
SESSION_LIMIT = "SessionLimit"

# Signals sent by session workflows to their owner's quota workflow.
RECORD_USAGE = "record_usage"
SESSION_OPENED = "session_opened"
SESSION_CLOSED = "session_closed"

DEFAULT_MAX_REQUESTS_PER_RUN = 500


class QuotaLimits(BaseModel):
    """The limits in force, sent with every request: the workflow keeps only counters, so a
    settings change applies at once."""

    messages_per_minute: int | None = None
    tokens_per_day: int | None = None


class AdmitMessage(BaseModel):
    """Update `admit_message`: may this user send this message now?"""

    session_id: str
    message_id: str
    limits: QuotaLimits


class ReserveSession(BaseModel):
    """Update `reserve_session`: a slot for a session about to start (created or resumed)."""

    session_id: str
    limit: int


class TurnUsage(BaseModel):
    """Signal `record_usage`: the tokens one turn used, sent by the session when it ends."""

    session_id: str
    message_id: str
    tokens: int


class AdmittedMessage(BaseModel):
    at: datetime
    key: str = Field(description="session id/message id, so a resend is not counted twice.")


class QuotaCounters(BaseModel):
    """All the workflow's state: carried across continue-as-new, shown by the `usage` query."""

    recent: list[AdmittedMessage] = Field(
        default_factory=list,
        description="Messages admitted in the last minute, oldest first (at most the limit).",
    )
    day: date | None = Field(default=None, description="The UTC day tokens_today counts.")
    tokens_today: int = 0
    open_sessions: dict[str, datetime | None] = Field(
        default_factory=dict,
        description="Session id -> when its slot was reserved, until the session confirms "
        "it has started (then null). Unconfirmed slots lapse after a grace period.",
    )
    runs: int = 1


class QuotaView(BaseModel):
    """What an update answers and the `usage` query shows: counts only, so history stays small."""

    messages_last_minute: int
    tokens_today: int
    open_sessions: int
    runs: int = 1


class QuotaInput(BaseModel):
    user: str
    carried: QuotaCounters | None = None
    max_requests_per_run: int = Field(
        default=DEFAULT_MAX_REQUESTS_PER_RUN,
        description="Continue as new after this many updates and signals (or sooner, when "
        "Temporal suggests it), so history stays small.",
    )
