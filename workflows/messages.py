"""One typed model per message that crosses the workflow boundary.

The gateway, the worker and the activities share these through the pydantic data converter.
Fields are only ever added (with defaults), never renamed, so running sessions keep decoding.
"""

from datetime import datetime
from functools import cache
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    computed_field,
    model_serializer,
)

Role = Literal["system", "user", "assistant", "tool"]
BusyPolicy = Literal["queue", "reject", "interrupt"]
SessionState = Literal["active", "working", "awaiting_approval", "expired", "ended"]
ApprovalState = Literal["pending", "approved", "denied", "timed_out"]

# Hard limits the workflow itself enforces (its update validator); the gateway's configurable
# limits are tighter and are checked before anything reaches Temporal.
MAX_CONTENT_CHARS = 100_000
MAX_QUEUED_MESSAGES = 100
DEFAULT_INACTIVITY_TIMEOUT_SECONDS = 2 * 60 * 60
DEFAULT_MAX_TURNS_PER_RUN = 250
DEFAULT_MAX_TOOL_STEPS = 8
DEFAULT_APPROVAL_TIMEOUT_SECONDS = 15 * 60
MAX_TOOLS_PER_SESSION = 64


class Compact(BaseModel):
    """Written without the fields that hold their defaults (decoding restores them): for the
    models that every turn writes into history, where empty fields are bytes paid per turn."""

    @model_serializer(mode="wrap")
    def _without_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if not isinstance(data, dict):
            return data
        for name, default in _defaults_of(type(self)).items():
            if name in data and getattr(self, name) == default:
                del data[name]
        return data


@cache
def _defaults_of(model: type[BaseModel]) -> dict[str, Any]:
    """A Compact model's optional fields and their defaults, worked out once per class: this
    runs for every payload a turn writes, and again for each one when a session is replayed."""
    return {
        name: field.get_default(call_default_factory=True)
        for name, field in model.model_fields.items()
        if not field.is_required()
    }


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def plus(self, other: "Usage") -> "Usage":
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class ToolCall(BaseModel):
    """A model's request to run a tool: one form for OpenAI `tool_calls` and Anthropic `tool_use`.

    `arguments` is the JSON text as the model wrote it; the tool registry validates it.
    """

    id: str
    name: str
    arguments: str


class RecordedToolCall(ToolCall):
    """A tool call as history keeps it: with its approval state when the tool needs one."""

    approval: ApprovalState | None = Field(
        default=None, description="Null when the tool needs no approval."
    )
    decision_reason: str | None = None


class ChatMessage(BaseModel):
    """One entry of a session's history; `seq` is its 1-based position and paging cursor."""

    seq: int
    id: str
    role: Role
    content: str
    created_at: datetime
    turn: int | None = None
    reply_to: str | None = Field(
        default=None, description="On an assistant message: the id of the user message it answers."
    )
    model: str | None = None
    usage: Usage | None = None
    error: str | None = Field(
        default=None, description="Set when the turn failed; the session stays usable."
    )
    tool_calls: list[RecordedToolCall] = Field(
        default_factory=list,
        description="On an assistant message: the tools the model asked for. Their results "
        "follow as `tool` messages, in the same order.",
    )
    tool_call_id: str | None = Field(
        default=None, description="On a tool message: the call this is the result of."
    )
    tool_name: str | None = Field(default=None, description="On a tool message: the tool.")
    is_error: bool = Field(
        default=False,
        description="On a tool message: the call failed, was refused or had invalid "
        "arguments; the model was told so.",
    )
    truncated: bool = Field(
        default=False, description="On a tool message: the output was cut to the size cap."
    )
    attempt: int | None = Field(
        default=None,
        description="On a model's message: the attempt of the model call that wrote it "
        "(a stream's `restart` events name the attempt that replaced a failed one).",
    )


class SessionConfig(BaseModel):
    system_prompt: str | None = None
    model: str
    inactivity_timeout_seconds: int = DEFAULT_INACTIVITY_TIMEOUT_SECONDS
    max_turns_per_run: int = DEFAULT_MAX_TURNS_PER_RUN
    tools: list[str] = Field(default_factory=list, description="Tools the model may call.")
    max_tool_steps: int = Field(
        default=DEFAULT_MAX_TOOL_STEPS,
        description="Model calls per turn; the last may not ask for more tools.",
    )
    approval_timeout_seconds: int = Field(
        default=DEFAULT_APPROVAL_TIMEOUT_SECONDS,
        description="A tool call waiting for approval longer than this is denied.",
    )
    max_messages: int | None = Field(
        default=None,
        description="User messages the session accepts in its whole life; null: no limit. "
        "Set at creation and again whenever the session resumes.",
    )
    busy_policy: BusyPolicy = Field(
        default="queue",
        description="A message arriving while a reply is being generated: `queue` it (answered "
        "next), `reject` it (409), or `interrupt` the generation (the running reply is recorded "
        "as interrupted and the new message is answered next).",
    )
    carry_max_chars: int = Field(
        default=200_000,
        description="Message characters carried into the next run at most; older messages "
        "are read from the runs that held them.",
    )
    compaction: bool = Field(
        default=True, description="Summarise messages that no longer fit the prompt."
    )
    compaction_model: str | None = Field(
        default=None, description="The model that writes summaries; null: the session's."
    )
    compaction_threshold: float = Field(
        default=0.25,
        description="Summarise once the messages left out of the prompt and not yet "
        "summarised reach this fraction of the prompt budget.",
    )


class SendMessage(Compact):
    """A user message, by signal (`send_message`) or update (`send_message_and_wait`)."""

    message_id: str
    content: str
    count_tokens: bool = Field(
        default=False,
        description="Report this message's turn's tokens to the owner's quota workflow.",
    )


class QueuedMessage(BaseModel):
    message_id: str
    content: str
    received_at: datetime
    count_tokens: bool = False


class Summary(BaseModel):
    """A running summary of the conversation's older part, written by compaction.

    It replaces messages 1..`upto_seq` in model prompts only: those messages stay in history.
    """

    text: str
    upto_seq: int = Field(description="The last message the summary covers.")
    created_at: datetime
    model: str | None = None
    usage: Usage | None = None


class ArchivedRun(BaseModel):
    """A closed run of the session that held messages `first_seq`..`last_seq`; its `history`
    query still serves them (Temporal keeps closed runs for the namespace's retention)."""

    run_id: str
    first_seq: int
    last_seq: int


class CarriedState(BaseModel):
    """Everything a new run needs: passed on continue-as-new, loaded on resume."""

    config: SessionConfig
    messages: list[ChatMessage]
    queue: list[QueuedMessage] = []
    turns: int = 0
    usage: Usage = Usage()
    created_at: datetime
    last_activity_at: datetime
    runs: int = 1
    summary: Summary | None = None
    message_count: int | None = Field(
        default=None,
        description="Messages in the whole session; `messages` holds only the newest of them "
        "(null: all of them, as runs before bounded carrying wrote).",
    )
    archive: list[ArchivedRun] = Field(
        default_factory=list, description="Earlier runs and the messages each held."
    )
    answered: dict[str, int] = Field(
        default_factory=dict,
        description="Recent user message ids no longer held, with their reply's seq, so a "
        "resend is still recognised.",
    )


class SessionInput(BaseModel):
    owner: str
    session_id: str
    config: SessionConfig
    carried: CarriedState | None = None
    resume: bool = Field(
        default=False,
        description="Started by a message rather than by session creation: load the "
        "previous run's history, if there is one.",
    )
    previous_run_id: str | None = Field(
        default=None,
        description="The closed run to resume from, when the starter knows it; otherwise "
        "the previous run is looked up through visibility.",
    )
    activity_task_queue: str | None = Field(
        default=None,
        description="Where model and tool calls run; none: the session's own task queue. "
        "Taken from each run's input (not carried), so a deployment can move it.",
    )
    importing: bool = Field(
        default=False,
        description="Started to receive an exported conversation by `import_messages` "
        "before it takes new messages (kept across continue-as-new until `finish_import`).",
    )
    count_sessions: bool = Field(
        default=False,
        description="Tell the owner's quota workflow when this session opens and closes (the "
        "open-sessions limit). Set by the gateway on creation and on resume; kept across "
        "continue-as-new.",
    )


class ImportBatch(BaseModel):
    """Messages for a session being imported (update `import_messages`), in seq order,
    continuing exactly after the last one stored; a batch already stored is a no-op."""

    messages: list[ChatMessage]


class ImportDone(BaseModel):
    """Ends an import (update `finish_import`): the session then takes messages as usual."""

    summary: Summary | None = None
    usage: Usage = Usage()


class PreviousSessionRequest(BaseModel):
    workflow_id: str
    run_id: str | None = None


class Reply(Compact):
    message_id: str
    reply: ChatMessage | None = Field(
        default=None,
        description="Null for a long reply (history holds its text once, in the model call's "
        "result) or a resend answered so long ago that the current run no longer holds it: "
        "read it at `reply_seq` through history.",
    )
    reply_seq: int | None = None


class ReplyLookup(BaseModel):
    message_id: str
    state: Literal["unknown", "queued", "working", "awaiting_approval", "done"]
    reply: ChatMessage | None = None
    reply_seq: int | None = None


class TurnViewRequest(BaseModel):
    """Which turn to show: by its user message, by turn number, or (neither) the current one."""

    message_id: str | None = None
    turn: int | None = None


class TurnView(BaseModel):
    """One turn as far as it has got; what a reply stream is rebuilt from after a reconnect."""

    message_id: str | None = None
    turn: int | None = Field(default=None, description="Null while the message is queued.")
    state: Literal["unknown", "queued", "working", "awaiting_approval", "done"]
    model_step: int | None = Field(
        default=None, description="The step whose model call is running now, if one is."
    )
    messages: list[ChatMessage] = Field(
        default_factory=list,
        description="The turn's messages after the user's: tool steps, tool results, the reply.",
    )


class HistoryRequest(BaseModel):
    after: int = 0
    limit: int = 50


class HistoryPage(BaseModel):
    messages: list[ChatMessage]
    next: int | None = Field(
        default=None, description="Pass as `after` to read the next page; null at the end."
    )
    archived_in: str | None = Field(
        default=None,
        description="Set instead of `messages` when they are older than this run holds: the "
        "run id of the closed run that holds them.",
    )


class ToolSpec(BaseModel):
    """What the model is told about a tool; `parameters` is a generated JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


class ToolPolicy(BaseModel):
    """How the workflow runs one tool; decided by the worker's registry, recorded in history."""

    needs_approval: bool = False
    timeout_seconds: float = 30.0
    max_attempts: int = 1


class PendingApproval(BaseModel):
    call_id: str
    name: str
    arguments: str
    message_id: str = Field(description="The user message whose turn asked for the call.")
    turn: int
    requested_at: datetime
    deadline: datetime = Field(description="Denied automatically if not decided by then.")


class ToolDecision(BaseModel):
    """The owner's answer to a call waiting for approval (update `decide_tool_call`)."""

    call_id: str
    approve: bool
    reason: str | None = None


class SetTools(BaseModel):
    """Replace the session's tools (update `set_tools`); applies from the next model call."""

    tools: list[str]


class ToolCallInput(BaseModel):
    """One tool call, with who made it, so a tool with side effects can be idempotent."""

    owner: str
    session_id: str
    workflow_id: str
    turn: int
    call: ToolCall
    max_attempts: int = 1


class ToolOutcome(BaseModel):
    content: str
    is_error: bool = False
    truncated: bool = False


class ContextMessage(BaseModel):
    role: Role
    content: str
    tool_calls: list[ToolCall] = Field(
        default_factory=list, description="On an assistant message: the tools it asked for."
    )
    tool_call_id: str | None = Field(
        default=None, description="On a tool message: the call this is the result of."
    )
    is_error: bool = Field(default=False, description="On a tool message: the call failed.")
    seq: int | None = Field(
        default=None,
        description="Its place in the session (none: the system prompt or the summary); "
        "never sent to a model.",
    )


class LLMContextRequest(BaseModel):
    upto_seq: int
    max_chars: int


class LLMTurnInput(Compact):
    """Carries only this turn's new message, never the transcript.

    Passing the whole transcript into every turn would make history grow with the square of
    the number of turns. The worker keeps recent transcripts in memory (activities/
    context_cache.py) and reads the rest by query when its copy is missing or stale. The
    session's workflow and run ids are the activity's own (`activities/caller.py`).
    """

    turn: int
    upto_seq: int
    model: str
    user_message: str = ""
    user_digest: str | None = Field(
        default=None,
        description="Set instead of `user_message` when the message is long: the activity "
        "reads it by query, so history holds its text once (in the send).",
    )
    system_prompt: str | None = Field(
        default=None, description="Sent on a session's first turn only, which needs no query."
    )
    previous_digest: str | None = Field(
        default=None,
        description="Digest of the message just before this turn's user message, so a "
        "cached transcript is used only if it ends exactly there.",
    )
    step: int = Field(
        default=1, description="1 for the turn's first model call, +1 after each tool round."
    )
    result_digests: list[str] = Field(
        default_factory=list,
        description="After a tool round: digests of its results, in call order, so the "
        "worker's cached copies are used only if they match history.",
    )
    tools: list[str] = Field(default_factory=list, description="Tools the model may ask for.")
    summary_upto: int = Field(
        default=0,
        description="The last message the session's running summary covers (0: no summary); "
        "a cached transcript made under another summary is not used.",
    )


class LLMTurnResult(Compact):
    content: str
    model: str
    usage: Usage
    context_from_seq: int | None = Field(
        default=None, description="The oldest message the prompt included (null: unknown)."
    )
    dropped_tokens: int = Field(
        default=0,
        description="Tokens of messages newer than the running summary that did not fit.",
    )
    prompt_budget: int = Field(default=0, description="Tokens the prompt could use.")
    tool_calls: list[ToolCall] = []
    tool_policies: dict[str, ToolPolicy] = Field(
        default_factory=dict, description="For each tool named in `tool_calls`."
    )
    attempt: int = Field(default=1, description="The activity attempt that produced this.")


class CompactionRequest(BaseModel):
    """Summarise messages `after`+1..`upto` (with the current summary) into a new summary.

    The session is the activity's own workflow run (`activity.info()`)."""

    after: int
    upto: int
    model: str


class CompactionSource(BaseModel):
    summary: str | None = None
    messages: list[ContextMessage]


class SummaryResult(BaseModel):
    text: str
    model: str
    usage: Usage
    upto_seq: int | None = Field(
        default=None,
        description="The last message the summary covers, when the model's window held only "
        "the older part of what was asked (none: all of it).",
    )


class SessionStatus(BaseModel):
    owner: str
    session_id: str
    status: SessionState
    model: str
    system_prompt: str | None
    inactivity_timeout_seconds: int
    turns: int
    messages: int
    queued: int
    created_at: datetime
    last_activity_at: datetime
    expires_at: datetime | None
    usage: Usage
    runs: int
    tools: list[str] = []
    pending_approvals: list[PendingApproval] = []
    max_messages: int | None = Field(
        default=None, description="User messages the session accepts; null: no limit."
    )
    busy_policy: BusyPolicy = "queue"
    summary: Summary | None = Field(
        default=None,
        description="The running summary that stands in for messages up to its `upto_seq` "
        "in prompts (those messages stay in history).",
    )
    last_turn_usage: Usage | None = Field(
        default=None, description="Tokens the latest answered turn used, all its model calls."
    )
