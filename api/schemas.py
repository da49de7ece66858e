"""Request and response bodies of the HTTP API (`/v1`).

Limits that depend on settings (message length, system prompt length, timeout range) are
checked in `api/limits.py`, before anything reaches Temporal.
"""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.ids import ID_PATTERN
from tools.registry import ToolDefinition
from workflows.messages import BusyPolicy, ChatMessage, SessionState, Summary, Usage


class CreateSession(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "session_id": "trip-planning-42",
                    "system_prompt": "You are a concise travel assistant.",
                    "model": "local/smollm2",
                    "inactivity_timeout_seconds": 7200,
                    "tools": ["resolve_date", "calculate"],
                }
            ]
        },
    )

    session_id: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="Your own id for the session; a random one is made when omitted.",
    )
    system_prompt: str | None = Field(default=None, description="Instructions for the model.")
    model: str | None = Field(
        default=None,
        max_length=200,  # it is written into every model call's input in history
        description="`provider/model`, e.g. `local/smollm2` or `openai/gpt-4o-mini`; "
        "the deployment's default when omitted.",
    )
    inactivity_timeout_seconds: int | None = Field(
        default=None,
        description="The session ends itself after this long without a message (default 7200). "
        "A later message resumes it with its history.",
    )
    tools: list[str] = Field(
        default_factory=list,
        description="Names of tools the model may call (see `GET /v1/tools`).",
        max_length=256,
    )
    busy_policy: BusyPolicy = Field(
        default="queue",
        description="A message sent while a reply is being generated is queued (answered "
        "next), rejected with 409, or interrupts the generation (the unfinished reply is "
        "recorded with an error saying so; the new message is answered next).",
    )


class SessionCreated(BaseModel):
    session_id: str
    model: str
    system_prompt: str | None
    inactivity_timeout_seconds: int
    tools: list[str]
    temporal_ui_url: str = Field(description="This session in the Temporal Web UI.")


class ForkSession(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    upto_seq: int = Field(
        ge=1,
        description="The fork holds the conversation through the end of this message's turn "
        "(its reply and any tool steps), so it never ends mid-turn.",
    )
    session_id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="The new session's id; random if omitted."
    )


class PostMessage(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"content": "What is a good first day in Lisbon?", "message_id": "m-0001"}]
        },
    )

    content: str = Field(description="The user's message; must not be empty.")
    message_id: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        description="Idempotency key: resending the same id never adds a second copy and "
        "returns the same reply. Made by the gateway when omitted.",
    )


class MessageReply(BaseModel):
    """The reply to a message. When the model call failed, `reply.error` says why."""

    message_id: str
    reply: ChatMessage


class MessagePending(BaseModel):
    message_id: str
    status: Literal["queued", "working", "awaiting_approval", "accepted"] = Field(
        description="`awaiting_approval`: a tool call of this turn waits for the owner's "
        "decision (see the session's `pending_approvals`)."
    )
    reply_url: str = Field(description="GET this to fetch the reply once it is ready.")


class MessagePage(BaseModel):
    messages: list[ChatMessage]
    next: int | None = Field(description="Pass as `after` for the next page; null at the end.")


class SessionSummary(BaseModel):
    session_id: str
    status: SessionState
    model: str | None
    started_at: datetime
    closed_at: datetime | None


class SessionList(BaseModel):
    sessions: list[SessionSummary]


class ToolList(BaseModel):
    tools: list[ToolDefinition]


class SessionTools(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"tools": ["calculate"]}]}
    )

    tools: list[str] = Field(
        description="The session's tools from now on (replaces the list).", max_length=256
    )


class ToolCallDecision(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"approve": False, "reason": "Not that account."}]},
    )

    approve: bool
    reason: str | None = Field(
        default=None, max_length=2000, description="Told to the model with a denial."
    )


class Health(BaseModel):
    status: Literal["ok"]


class ErrorBody(BaseModel):
    detail: str = Field(examples=["session 'trip-planning-42' not found"])


class ExportedSettings(BaseModel):
    """The `session` part of an export: the settings a re-imported copy starts with."""

    model_config = ConfigDict(extra="forbid")

    session_id: str | None = Field(
        default=None, description="The exported session's id; the copy gets a new one."
    )
    model: str
    system_prompt: str | None = None
    inactivity_timeout_seconds: int | None = None
    tools: list[str] = Field(default_factory=list)
    busy_policy: BusyPolicy = "queue"


class ImportSession(BaseModel):
    """A JSON export (`GET /v1/sessions/{id}/export`) as it was written."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["durable-chat-session"]
    version: Literal[1]
    exported_at: datetime | None = None
    session: ExportedSettings
    summary: Summary | None = None
    usage: Usage = Field(default_factory=Usage)
    messages: list[ChatMessage]
