"""The `/v1` routes. Each one checks its input, then makes one call to the session service."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from api.auth import CurrentUser
from api.deps import ServiceDep, SettingsDep, StreamsDep, ToolsDep
from api.errors import ApiError
from api.export import batches, fork_end, json_export, markdown_export
from api.export import messages as export_messages
from api.importing import check_import, strictly
from api.limits import (
    check_content,
    check_model,
    check_system_prompt,
    check_timeout,
    check_tools,
)
from api.schemas import (
    CreateSession,
    ErrorBody,
    ForkSession,
    ImportSession,
    MessagePage,
    MessagePending,
    MessageReply,
    PostMessage,
    SessionCreated,
    SessionList,
    SessionTools,
    ToolCallDecision,
    ToolList,
)
from api.service import SessionService
from api.session_config import session_config
from api.streaming import resume_point
from common.ids import ID_PATTERN, is_valid_id, new_id
from workflows.messages import (
    ImportDone,
    RecordedToolCall,
    SendMessage,
    SessionConfig,
    SessionStatus,
    ToolDecision,
    TurnViewRequest,
    Usage,
)

_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "The request body could not be read."},
    401: {"model": ErrorBody, "description": "Missing or unknown API key."},
    404: {"model": ErrorBody, "description": "No such session for this user."},
    413: {"model": ErrorBody, "description": "A size limit was exceeded."},
    422: {"description": "The request is malformed or a value is out of range."},
    409: {
        "model": ErrorBody,
        "description": "A conflict with the current state: the session already exists, is "
        "full (its message limit), or the user has all the open sessions they may have.",
    },
    429: {
        "model": ErrorBody,
        "description": "Too busy, or past a per-user quota (messages per minute, tokens per "
        "day); retry after `Retry-After` seconds.",
    },
    503: {"model": ErrorBody, "description": "Temporal or the workers are not reachable."},
}

router = APIRouter(prefix="/v1", responses=_ERRORS)


@router.post(
    "/sessions",
    status_code=status.HTTP_201_CREATED,
    tags=["sessions"],
    responses={
        409: {
            "model": ErrorBody,
            "description": "The caller has a session of this id, or already has all the open "
            "sessions one user may have.",
        }
    },
)
async def create_session(
    body: CreateSession,
    user: CurrentUser,
    service: ServiceDep,
    settings: SettingsDep,
    tools: ToolsDep,
) -> SessionCreated:
    """Start a session. It ends itself after its inactivity timeout; a message resumes it."""
    check_system_prompt(settings, body.system_prompt)
    config = session_config(
        settings,
        check_model(settings, body.model),
        system_prompt=body.system_prompt,
        inactivity_timeout_seconds=check_timeout(settings, body.inactivity_timeout_seconds),
        tools=check_tools(settings, tools, body.tools),
        busy_policy=body.busy_policy,
    )
    session_id = body.session_id or new_id()
    await service.create(user, session_id, config)
    return _created(service, user, session_id, config)


def _created(
    service: SessionService, user: str, session_id: str, config: SessionConfig
) -> SessionCreated:
    return SessionCreated(
        session_id=session_id,
        model=config.model,
        system_prompt=config.system_prompt,
        inactivity_timeout_seconds=config.inactivity_timeout_seconds,
        tools=config.tools,
        temporal_ui_url=service.ui_url(user, session_id),
    )


@router.get("/sessions", tags=["sessions"])
async def list_sessions(
    user: CurrentUser,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SessionList:
    """The caller's sessions, newest first, whatever their state."""
    return SessionList(sessions=await service.list_sessions(user, limit))


@router.get("/sessions/{session_id}", tags=["sessions"])
async def get_session(session_id: str, user: CurrentUser, service: ServiceDep) -> SessionStatus:
    """Status: active / working / expired / ended, turns, last activity, token usage."""
    _check_id(session_id)
    return await service.status(user, session_id)


@router.get(
    "/sessions/{session_id}/export",
    tags=["sessions"],
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/json": {}, "text/markdown": {}},
            "description": "The whole conversation, across runs: JSON (every stored field, "
            "versioned) or Markdown.",
        }
    },
)
async def export_session(
    session_id: str,
    user: CurrentUser,
    service: ServiceDep,
    format: Annotated[Literal["json", "markdown"], Query()] = "json",
) -> StreamingResponse:
    """Download the session, streamed a page at a time."""
    _check_id(session_id)
    current = await service.status(user, session_id)
    if format == "markdown":
        body, media, ext = (
            markdown_export(service, user, session_id, current),
            "text/markdown",
            "md",
        )
    else:
        body, media, ext = (
            json_export(service, user, session_id, current),
            "application/json",
            "json",
        )
    disposition = f'attachment; filename="session-{session_id}.{ext}"'
    return StreamingResponse(body, media_type=media, headers={"Content-Disposition": disposition})


@router.post("/sessions/{session_id}/fork", status_code=status.HTTP_201_CREATED, tags=["sessions"])
async def fork_session(
    session_id: str,
    body: ForkSession,
    user: CurrentUser,
    service: ServiceDep,
    settings: SettingsDep,
) -> SessionCreated:
    """A new session with this one's settings and its conversation up to a message."""
    _check_id(session_id)
    source = await service.status(user, session_id)
    if body.upto_seq > source.messages:
        raise ApiError(404, f"no message {body.upto_seq} in this session")
    history = [m async for m in export_messages(service, user, session_id)]
    end = fork_end(history, body.upto_seq)
    kept = [m for m in history if m.seq <= end]
    config = session_config(
        settings,
        source.model,
        system_prompt=source.system_prompt,
        inactivity_timeout_seconds=source.inactivity_timeout_seconds,
        tools=source.tools,
        busy_policy=source.busy_policy,
    )
    summary = source.summary if source.summary and source.summary.upto_seq <= end else None
    usage = Usage()
    for message in kept:
        usage = usage.plus(message.usage) if message.usage else usage
    fork_id = body.session_id or new_id()
    await service.import_session(
        user, fork_id, config, batches(kept), ImportDone(summary=summary, usage=usage)
    )
    return _created(service, user, fork_id, config)


@router.post("/imports", status_code=status.HTTP_201_CREATED, tags=["sessions"])
async def import_session(
    body: ImportSession,
    request: Request,
    user: CurrentUser,
    service: ServiceDep,
    settings: SettingsDep,
    tools: ToolsDep,
    session_id: Annotated[
        str | None,
        Query(pattern=ID_PATTERN, description="The new session's id; random if omitted."),
    ] = None,
) -> SessionCreated:
    """A new session from a JSON export (`GET /v1/sessions/{id}/export`), with its settings,
    summary, usage and every message; it takes new messages once all are in.

    Not under `/sessions/`: "import" is a valid session id there."""
    config, parts, done = check_import(settings, tools, strictly(body, await request.body()))
    new_session = session_id or new_id()
    await service.import_session(user, new_session, config, parts, done)
    return _created(service, user, new_session, config)


@router.delete("/sessions/{session_id}", tags=["sessions"])
async def end_session(session_id: str, user: CurrentUser, service: ServiceDep) -> SessionStatus:
    """End the session after any queued messages are answered. A later message resumes it."""
    _check_id(session_id)
    return await service.end(user, session_id)


@router.post(
    "/sessions/{session_id}/messages",
    tags=["messages"],
    responses={202: {"model": MessagePending, "description": "Accepted; the reply comes later."}},
)
async def post_message(
    session_id: str,
    body: PostMessage,
    user: CurrentUser,
    service: ServiceDep,
    settings: SettingsDep,
    response: Response,
    wait: Annotated[
        bool, Query(description="false: return 202 as soon as the message is stored.")
    ] = True,
) -> MessageReply | MessagePending:
    """Send a message and (by default) wait for the reply.

    If the reply takes longer than the gateway's wait limit, or `wait=false`, the answer is
    202 with `reply_url`. The message is durable either way.
    """
    _check_id(session_id)
    check_content(settings, body.content)
    msg = SendMessage(message_id=body.message_id or new_id(), content=body.content)
    if wait:
        reply = await service.send_and_wait(user, session_id, msg)
        if reply is not None:
            return MessageReply(message_id=reply.message_id, reply=reply.reply)
    else:
        await service.send(user, session_id, msg)
    return _pending(response, session_id, msg.message_id, "accepted")


@router.get(
    "/sessions/{session_id}/messages/{message_id}",
    tags=["messages"],
    responses={202: {"model": MessagePending, "description": "Not answered yet."}},
)
async def get_reply(
    session_id: str, message_id: str, user: CurrentUser, service: ServiceDep, response: Response
) -> MessageReply | MessagePending:
    """The reply to one message, once it is ready."""
    _check_id(session_id)
    _check_id(message_id, "message_id")
    lookup = await service.reply(user, session_id, message_id)
    if lookup.state == "done" and lookup.reply is not None:
        return MessageReply(message_id=message_id, reply=lookup.reply)
    if lookup.state == "unknown":
        raise ApiError(404, f"message {message_id!r} not found in session {session_id!r}")
    return _pending(response, session_id, message_id, lookup.state)


@router.get("/sessions/{session_id}/messages", tags=["messages"])
async def list_messages(
    session_id: str,
    user: CurrentUser,
    service: ServiceDep,
    after: Annotated[int, Query(ge=0, description="Return messages with seq > after.")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> MessagePage:
    """A page of the session's history, oldest first; follow `next` for the rest."""
    _check_id(session_id)
    page = await service.history(user, session_id, after, limit)
    return MessagePage(messages=page.messages, next=page.next)


# Before OpenAPI 3.2 (and its `itemSchema`), a text/event-stream `schema` describes one event.
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {
            "type": "string",
            "enum": [
                "turn_started",
                "delta",
                "restart",
                "tool_call",
                "tool_result",
                "error",
                "turn_completed",
            ],
        },
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"type": "object"},
        },
        "id": {"type": "string", "description": "Send as `Last-Event-ID` to resume after it."},
    },
    "required": ["event", "data"],
}
_SSE: dict[int | str, dict[str, object]] = {
    200: {
        "content": {"text/event-stream": {"schema": _SSE_EVENT}},
        "description": "Server-Sent Events of one turn: `turn_started`, `delta` (text), "
        "`restart` (drop this step's text so far: a retried model call writes it again), "
        "`tool_call`, `tool_result`, `error`, then `turn_completed`. Every event has an id; "
        "reconnect with `Last-Event-ID` to continue right after it, through any gateway.",
    },
    400: {"model": ErrorBody, "description": "Last-Event-ID is not one of this turn's."},
}
_STREAM_ROUTE: dict[str, Any] = {
    "tags": ["streaming"],
    "response_class": StreamingResponse,
    "responses": _SSE,
}
LastEventId = Annotated[
    str | None,
    Header(alias="Last-Event-ID", description="Resume after this event (sent by EventSource)."),
]


@router.post("/sessions/{session_id}/messages/stream", **_STREAM_ROUTE)
async def stream_message(
    session_id: str,
    body: PostMessage,
    user: CurrentUser,
    service: ServiceDep,
    streams: StreamsDep,
    settings: SettingsDep,
) -> StreamingResponse:
    """Send a message and read its turn as it happens. The message is durable before the
    stream starts; closing the stream does not stop the reply, which lands in history."""
    _check_id(session_id)
    check_content(settings, body.content)
    msg = SendMessage(message_id=body.message_id or new_id(), content=body.content)
    await service.send(user, session_id, msg)
    req = TurnViewRequest(message_id=msg.message_id)
    return await streams.open(user, session_id, req, None, just_sent=True)


@router.get("/sessions/{session_id}/messages/{message_id}/stream", **_STREAM_ROUTE)
async def stream_reply(
    session_id: str,
    message_id: str,
    user: CurrentUser,
    streams: StreamsDep,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Attach to one message's turn (another tab, or a reconnect); a finished turn is replayed."""
    _check_id(session_id)
    _check_id(message_id, "message_id")
    req = TurnViewRequest(message_id=message_id)
    return await streams.open(user, session_id, req, resume_point(last_event_id))


@router.get("/sessions/{session_id}/stream", **_STREAM_ROUTE)
async def stream_current_turn(
    session_id: str, user: CurrentUser, streams: StreamsDep, last_event_id: LastEventId = None
) -> StreamingResponse:
    """Attach to the turn in progress (or the next queued one); with `Last-Event-ID`, to that
    event's turn. 404 when nothing is in progress."""
    _check_id(session_id)
    after = resume_point(last_event_id)
    req = TurnViewRequest(turn=after.turn if after else None)
    return await streams.open(user, session_id, req, after)


@router.get("/tools", tags=["tools"])
async def list_tools(user: CurrentUser, tools: ToolsDep) -> ToolList:
    """The tools a session may name, with the JSON schema of their arguments."""
    return ToolList(tools=tools.definitions())


@router.put(
    "/sessions/{session_id}/tools",
    tags=["tools"],
    responses={409: {"model": ErrorBody, "description": "The session has ended or expired."}},
)
async def set_session_tools(
    session_id: str,
    body: SessionTools,
    user: CurrentUser,
    service: ServiceDep,
    settings: SettingsDep,
    tools: ToolsDep,
) -> SessionStatus:
    """Replace the session's tools; a turn in progress uses them from its next model call."""
    _check_id(session_id)
    return await service.set_tools(user, session_id, check_tools(settings, tools, body.tools))


@router.post(
    "/sessions/{session_id}/tool-calls/{call_id}/decision",
    tags=["tools"],
    responses={409: {"model": ErrorBody, "description": "The call was already decided."}},
)
async def decide_tool_call(
    session_id: str, call_id: str, body: ToolCallDecision, user: CurrentUser, service: ServiceDep
) -> RecordedToolCall:
    """Approve or deny a tool call that waits for approval (see the session's
    `pending_approvals`). A denial, with its reason, is told to the model."""
    _check_id(session_id)
    if not call_id or len(call_id) > 200:
        raise ApiError(404, f"no tool call {call_id!r} is waiting for a decision")
    decision = ToolDecision(call_id=call_id, approve=body.approve, reason=body.reason)
    return await service.decide_tool_call(user, session_id, decision)


def _pending(response: Response, session_id: str, message_id: str, state: str) -> MessagePending:
    url = f"/v1/sessions/{session_id}/messages/{message_id}"
    response.status_code = status.HTTP_202_ACCEPTED
    response.headers["Location"] = url
    return MessagePending(message_id=message_id, status=state, reply_url=url)


def _check_id(value: str, name: str = "session_id") -> None:
    if not is_valid_id(value):
        raise ApiError(404 if name == "session_id" else 422, f"{name} {value!r} is not valid")
