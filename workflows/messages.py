"""One typed model per message that crosses the workflow boundary.

The gateway, the worker and the activities share these through the pydantic data converter.
Fields are only ever added (with defaults), never renamed, so running sessions keep decoding.
"""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

Role = Literal["system", "user", "assistant", "tool"]
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


class SendMessage(BaseModel):
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
    count_sessions: bool = Field(
        default=False,
        description="Tell the owner's quota workflow when this session opens and closes (the "
        "open-sessions limit). Set by the gateway on creation and on resume; kept across "
        "continue-as-new.",
    )


class PreviousSessionRequest(BaseModel):
    workflow_id: str
    run_id: str | None = None


class Reply(BaseModel):
    message_id: str
    reply: ChatMessage


class ReplyLookup(BaseModel):
    message_id: str
    state: Literal["unknown", "queued", "working", "awaiting_approval", "done"]
    reply: ChatMessage | None = None


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


class LLMContextRequest(BaseModel):
    upto_seq: int
    max_chars: int


class LLMTurnInput(BaseModel):
    """Carries only this turn's new message, never the transcript.

    Passing the whole transcript into every turn would make history grow with the square of
    the number of turns. The worker keeps recent transcripts in memory (activities/
    context_cache.py) and reads the rest by query when its copy is missing or stale.
    """

    workflow_id: str
    run_id: str
    turn: int
    upto_seq: int
    model: str
    user_message: str = ""
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


class LLMTurnResult(BaseModel):
    content: str
    model: str
    usage: Usage
    tool_calls: list[ToolCall] = []
    tool_policies: dict[str, ToolPolicy] = Field(
        default_factory=dict, description="For each tool named in `tool_calls`."
    )
    attempt: int = Field(default=1, description="The activity attempt that produced this.")


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
