"""The OpenAI-compatible endpoint: `POST /v1/chat/completions` and `GET /v1/models`, so the
official `openai` package (or any Chat Completions client) gets durable sessions by pointing
its base URL at the gateway.

How a request maps onto a session:
- The session is named by the `X-Session-Id` header, else by the `user` field; naming none is
  a 400 (a fresh session per request would silently drop the conversation). The workflow id
  embeds the caller, so another user's id names the caller's own session, never theirs.
- The session is created on first use, with `model` and the `system`/`developer` messages of
  that request. Once it exists both are ignored: the session keeps its model (the response's
  `model` names it) and its system prompt.
- The new message is the last one, which must be the user's. Earlier messages are ignored:
  the session's own history is the context, so a client may send only the new message or
  the whole conversation, as it likes.
- `Idempotency-Key` is the message id: a resend (the SDK retries timeouts and 5xx) gets the
  stored reply instead of a second turn. Without it the gateway makes an id, and answers
  `x-should-retry: false` to errors that come after the message was stored.
- The session's own tools run inside the turn; the reply is the last model step's text.
  Client-side `tools`/`functions` and `n` > 1 are refused (400); sampling parameters
  (`temperature`, `max_tokens`, ...) are ignored: the deployment sets them.

Streaming sends each model step's text as it is generated. A retried model call (`restart`)
cannot be withdrawn in OpenAI chunks, so the stream holds the retry's text until it has passed
what the client already has: a retry that rewrites the same text continues seamlessly; one
that writes different text ends the stream with an error naming the stored reply. So a
stream that ends with `finish_reason` has sent exactly the stored reply, with one exception
no stream can avoid: text a model writes alongside a tool request ("Let me look that up")
streams too, as nobody knows it is not the reply until the step ends (most models write none).

Errors on these paths have OpenAI's shape, `{"error": {message, type, param, code}}`, with the
statuses of the rest of the API (401, 404, 409, 413, 422, 429 + Retry-After, 503), plus 400
for what this mapping cannot serve, 502 for a failed model call and 504 past
LONGEST_WAIT_SECONDS. The `OpenAIErrorShape` middleware rewrites whatever produced them (auth,
validation, body limits, Temporal); every other path keeps `{"detail": ...}`.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from starlette.background import BackgroundTask
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import CurrentUser
from api.deps import ServiceDep, SettingsDep, StreamsDep
from api.errors import ApiError
from api.limits import check_content, check_model, check_system_prompt
from api.service import SessionService
from api.session_config import session_config
from api.streaming import KEEPALIVE, LiveStreams, StreamEvent
from common.ids import ID_PATTERN, is_valid_id, new_id
from common.settings import Settings, split_model
from workflows.messages import ChatMessage, SendMessage, TurnViewRequest

LONGEST_WAIT_SECONDS = 600.0  # the openai package's default timeout; past it, 504
POLL_MIN_SECONDS = 0.05
POLL_MAX_SECONDS = 1.0
KNOWN_MODELS = ("local/smollm2", "scripted/echo")  # named models a provider always has
SESSION_HEADER = "X-Session-Id"
MESSAGE_HEADER = "X-Message-Id"
_SCOPE_FLAGS = "openai_endpoint.flags"
_NO_RETRY = "no_retry"

# ---- bodies -------------------------------------------------------------------------------


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, tool_call_id, ...: ignored

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    """Chat Completions' request; parameters not listed here are accepted and ignored."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "model": "openai/gpt-4o-mini",
                    "messages": [
                        {"role": "system", "content": "You are a concise travel assistant."},
                        {"role": "user", "content": "What is a good first day in Lisbon?"},
                    ],
                    "stream": False,
                }
            ]
        },
    )

    model: str = Field(
        max_length=200,
        description="`provider/model` (see `GET /v1/models`), used when this request creates "
        "the session; an existing session keeps its own.",
    )
    messages: list[InputMessage] = Field(
        min_length=1,
        description="The last one is the new user message; earlier ones are ignored (the "
        "session keeps the conversation), but for `system`/`developer` messages, which set "
        "the system prompt of a session this request creates.",
    )
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(
        default=None,
        description="Names the session when the `X-Session-Id` header is absent.",
    )
    n: StrictInt | None = Field(default=None, description="Only 1 is supported.")
    tools: list[dict[str, Any]] | None = Field(
        default=None, description="Not supported: the session's own tools run server-side."
    )
    functions: list[dict[str, Any]] | None = Field(default=None, description="Not supported.")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str = Field(description="`chatcmpl-<message id>`: the same for a resend.")
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    error: ErrorDetail


# ---- errors -------------------------------------------------------------------------------

_TYPES = {401: "authentication_error", 429: "rate_limit_error"}
_CODES = {
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    422: "invalid_value",
    429: "rate_limit_exceeded",
    502: "model_error",
    503: "service_unavailable",
    504: "timeout",
}


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    detail = ErrorDetail(message=message, type=kind, param=param, code=code or _CODES.get(status))
    return {"error": detail.model_dump()}


class OpenAIError(Exception):
    """A refusal with OpenAI's `param` and `code`, raised by these routes."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers


async def _openai_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpenAIError)
    body = error_body(exc.status, exc.message, exc.param, exc.code)
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def _is_openai_path(path: str) -> bool:
    return path == "/v1/models" or path.startswith(("/v1/models/", "/v1/chat/"))


class OpenAIErrorShape:
    """Rewrites `{"detail": ...}` error responses of the OpenAI paths into OpenAI's shape,
    whatever produced them: auth, request validation, body limits, Temporal failures. Success
    responses (and streams) pass untouched; only error bodies, which are small, are held.

    Also answers `x-should-retry: false` (the openai package's retry switch) where a retry
    could not help: 409s, and any error after a message without `Idempotency-Key` was stored,
    whose resend would be a second message."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_openai_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        flags: dict[str, bool] = {}
        scope[_SCOPE_FLAGS] = flags
        start: Message | None = None
        body: list[bytes] = []

        async def send_shaped(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if not message.get("more_body", False):
                await _send_shaped(send, start, b"".join(body), flags.get(_NO_RETRY, False))

        await self.app(scope, receive, send_shaped)


async def _send_shaped(send: Send, start: Message, raw: bytes, stored: bool) -> None:
    status: int = start["status"]
    try:
        payload = json.loads(raw) if raw else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = {"detail": raw.decode("utf-8", "replace")}
    if not (isinstance(payload, dict) and isinstance(payload.get("error"), dict)):
        payload = _from_detail(status, payload.get("detail") if isinstance(payload, dict) else None)
    encoded = json.dumps(payload, separators=(",", ":")).encode()
    skip = {b"content-length", b"content-type"}
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in skip]
    headers += [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(encoded)).encode()),
    ]
    decided = any(k.lower() == b"x-should-retry" for k, _ in headers)
    if (status == 409 or stored) and not decided:
        headers.append((b"x-should-retry", b"false"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": encoded})


def _from_detail(status: int, detail: Any) -> dict[str, Any]:
    if isinstance(detail, list) and detail:  # FastAPI's request validation errors
        places = [_place(item) for item in detail]
        problems = [f"{where}: {msg}" if where else msg for where, msg in places]
        return error_body(status, "; ".join(problems), places[0][0] or None)
    message = detail if isinstance(detail, str) and detail else f"HTTP {status}"
    return error_body(status, message)


def _place(item: Any) -> tuple[str, str]:
    """(`messages.0.role`, what is wrong) of one validation error; the place is "" when it is
    the body itself (unreadable JSON: FastAPI gives a character offset there)."""
    if not isinstance(item, dict):
        return "", str(item)
    loc = list(item.get("loc", []))[1:]
    where = ".".join(str(p) for p in loc) if loc and isinstance(loc[0], str) else ""
    return where, str(item.get("msg", "invalid"))


# ---- routes -------------------------------------------------------------------------------


def _error(description: str) -> dict[str, Any]:
    return {"model": OpenAIErrorBody, "description": description}


_ERRORS: dict[int | str, dict[str, Any]] = {401: _error("Missing or unknown API key.")}
# Before OpenAPI 3.2, a text/event-stream schema describes one event.
_CHUNK_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "data": {
            "type": "string",
            "description": "A `chat.completion.chunk` object in JSON, an `{error}` object, or "
            "`[DONE]` (the last event).",
        }
    },
    "required": ["data"],
}
_COMPLETION_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": _CHUNK_EVENT}},
        "description": "A `chat.completion`; with `stream: true`, Server-Sent Events of "
        "`chat.completion.chunk`s (the first with the role, then content, then one with "
        "`finish_reason`, then one with `usage` if `stream_options.include_usage`), then "
        "`data: [DONE]`. A failure mid-stream is an `{error}` event, with no `[DONE]`.",
    },
    400: _error(
        "No session named (X-Session-Id or user), the last message is not the user's, or "
        "an unsupported parameter (n > 1, client-side tools, non-text content)."
    ),
    404: _error("The message could not be found in the session right after it was sent."),
    409: _error("The session is full, or the user has all the open sessions they may have."),
    413: _error("The message, system prompt or body is over its size limit."),
    422: _error("A value is malformed or out of range, e.g. an unknown model or empty text."),
    429: _error("Too busy, or past a per-user quota; retry after `Retry-After` seconds."),
    502: _error("The model call failed (after retries); the failure is in the session."),
    503: _error("Temporal or the workers are not reachable."),
    504: _error(f"No reply within {LONGEST_WAIT_SECONDS:.0f} s; it will land in the session."),
}

router = APIRouter(prefix="/v1", tags=["openai"], responses=_ERRORS)

SessionHeader = Annotated[
    str | None,
    Header(
        alias=SESSION_HEADER,
        pattern=ID_PATTERN,
        description="The session; created on first use. Takes precedence over `user`.",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=ID_PATTERN,
        description="The message id: a resend gets the stored reply, never a second turn.",
    ),
]


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses=_COMPLETION_ERRORS,
    summary="Chat Completions (OpenAI-compatible) on a durable session",
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    user: CurrentUser,
    service: ServiceDep,
    streams: StreamsDep,
    settings: SettingsDep,
    session_header: SessionHeader = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Send the last message of `messages` to the session named by `X-Session-Id` (or
    `user`), creating the session on first use, and answer as the OpenAI API does, streaming
    with `stream: true`. The reply lands in the session whether or not the client stays."""
    session_id = _session_id(session_header, body.user)
    _refuse_unsupported(body)
    last = len(body.messages) - 1
    if body.messages[last].role != "user":
        raise OpenAIError(
            400,
            f"the last message is the {body.messages[last].role}'s; it must be the new user "
            "message (the session keeps the rest of the conversation)",
            f"messages.{last}.role",
        )
    content = _text(body.messages[last], f"messages.{last}.content")
    check_content(settings, content)
    turn = Turn(
        user=user,
        session_id=session_id,
        message=SendMessage(message_id=idempotency_key or new_id(), content=content),
        model=await _ensure_session(service, settings, user, session_id, body),
        keyed=idempotency_key is not None,
    )
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await _stream(request, turn, service, streams, include_usage)
    return await _complete(request, turn, service)


@router.get("/models", summary="The models a session may use (OpenAI-compatible)")
async def list_models(user: CurrentUser, settings: SettingsDep) -> ModelList:
    """The deployment's default model first, then the named models of its other providers.
    Any `provider/model` of a configured provider is accepted on session creation."""
    return ModelList(data=[_card(name) for name in _models(settings)])


@router.get(
    "/models/{model:path}",
    summary="One model (OpenAI-compatible)",
    responses={404: _error("This deployment cannot serve that model.")},
)
async def get_model(model: str, user: CurrentUser, settings: SettingsDep) -> ModelCard:
    """A model a session may use: any `provider/model` of a configured provider."""
    try:
        check_model(settings, model)
    except ApiError as err:
        raise OpenAIError(404, err.detail, "model", "model_not_found") from err
    return _card(model)


def install(app: FastAPI) -> None:
    """The routes, their error handler, and the error-shape middleware; call it after the
    app's other middleware, so that errors those produce (413 body limits) are shaped too."""
    app.include_router(router)
    app.add_exception_handler(OpenAIError, _openai_error)
    app.add_middleware(OpenAIErrorShape)


@dataclass(frozen=True)
class Turn:
    """One request's message, and where it goes."""

    user: str
    session_id: str
    message: SendMessage
    model: str
    keyed: bool  # the client named the message (Idempotency-Key): a resend is safe

    @property
    def headers(self) -> dict[str, str]:
        return {SESSION_HEADER: self.session_id, MESSAGE_HEADER: self.message.message_id}

    @property
    def reply_url(self) -> str:
        return f"/v1/sessions/{self.session_id}/messages/{self.message.message_id}"

    def stored(self, request: Request) -> None:
        """The message is in the session: from now on an error must not invite a resend
        without its key, which would be a second message."""
        flags = request.scope.get(_SCOPE_FLAGS)
        if flags is not None and not self.keyed:
            flags[_NO_RETRY] = True


async def _complete(request: Request, turn: Turn, service: SessionService) -> Response:
    sent = await service.send_and_wait(turn.user, turn.session_id, turn.message)
    turn.stored(request)
    reply = sent.reply if sent and sent.reply else await _wait_for_reply(request, turn, service)
    if reply.error is not None:
        headers = {**turn.headers, "x-should-retry": "false"}  # the model was retried already
        raise OpenAIError(502, reply.error, headers=headers)
    return JSONResponse(completion(reply, turn).model_dump(), headers=turn.headers)


async def _stream(
    request: Request,
    turn: Turn,
    service: SessionService,
    streams: LiveStreams,
    include_usage: bool,
) -> Response:
    await service.send(turn.user, turn.session_id, turn.message)
    turn.stored(request)
    view = TurnViewRequest(message_id=turn.message.message_id)
    subscription = await streams.subscribe(turn.user, turn.session_id, view, None, just_sent=True)
    chunks = ChunkStream(
        completion_id=f"chatcmpl-{turn.message.message_id}",
        created=int(time.time()),
        model=turn.model,
        include_usage=include_usage,
        reply_url=turn.reply_url,
    )
    return StreamingResponse(
        chunks.sse(subscription.items()),
        media_type="text/event-stream",
        headers={**turn.headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(subscription.release),
    )


# ---- the request ----------------------------------------------------------------------------


def _session_id(header: str | None, user_field: str | None) -> str:
    if header is not None:
        return header
    if user_field is None:
        raise OpenAIError(
            400,
            f"name the session: send the {SESSION_HEADER} header (or, where a client cannot "
            "set headers, the `user` field); it is created on first use and keeps the "
            "conversation",
            SESSION_HEADER,
            "missing_session_id",
        )
    if not is_valid_id(user_field):
        raise OpenAIError(
            400,
            "the `user` field names the session here, so it must be 1-64 letters, digits, "
            f"'_' or '-' (or send the {SESSION_HEADER} header instead)",
            "user",
            "invalid_session_id",
        )
    return user_field


def _refuse_unsupported(body: ChatCompletionRequest) -> None:
    if body.n not in (None, 1):
        raise OpenAIError(400, "only n=1 is supported", "n", "unsupported_parameter")
    for name, value in (("tools", body.tools), ("functions", body.functions)):
        if value:
            raise OpenAIError(
                400,
                f"client-side {name} are not supported: the session's own tools run inside "
                "the turn (PUT /v1/sessions/{id}/tools)",
                name,
                "unsupported_parameter",
            )


def _text(message: InputMessage, param: str) -> str:
    """A message's text: a string, or text parts joined by newlines."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    kinds = {part.type for part in message.content} - {"text"}
    if kinds:
        raise OpenAIError(
            400,
            f"only text content is supported, not {', '.join(sorted(kinds))}",
            param,
            "unsupported_content",
        )
    return "\n".join(part.text or "" for part in message.content)


async def _ensure_session(
    service: SessionService,
    settings: Settings,
    user: str,
    session_id: str,
    body: ChatCompletionRequest,
) -> str:
    """The session's model, creating the session (model, system prompt) if it is new."""
    model = await service.model_of(user, session_id)
    if model is not None:
        return model
    system = [
        _text(m, f"messages.{i}.content")
        for i, m in enumerate(body.messages)
        if m.role in ("system", "developer")
    ]
    prompt = "\n\n".join(system) or None
    check_system_prompt(settings, prompt)
    try:
        model = check_model(settings, body.model)
    except ApiError as err:
        raise OpenAIError(
            422, f"{err.detail} (GET /v1/models lists them)", "model", "model_not_found"
        ) from err
    config = session_config(settings, model, system_prompt=prompt)
    try:
        await service.create(user, session_id, config)
    except ApiError as err:
        existing = await service.model_of(user, session_id) if err.status == 409 else None
        if existing is None:
            raise
        return existing  # a concurrent first request created it
    return model


async def _wait_for_reply(request: Request, turn: Turn, service: SessionService) -> ChatMessage:
    """Past the gateway's own wait limit (the message is stored): poll for the reply while
    the client waits, up to LONGEST_WAIT_SECONDS."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LONGEST_WAIT_SECONDS
    delay = POLL_MIN_SECONDS
    while loop.time() < deadline and not await request.is_disconnected():
        lookup = await service.reply(turn.user, turn.session_id, turn.message.message_id)
        if lookup.state == "done" and lookup.reply is not None:
            return lookup.reply
        await asyncio.sleep(delay)
        delay = min(delay * 2, POLL_MAX_SECONDS)
    raise OpenAIError(
        504,
        f"no reply within {LONGEST_WAIT_SECONDS:.0f} s; it will land in the session: GET "
        f"{turn.reply_url}, or resend with Idempotency-Key: {turn.message.message_id}",
    )


def completion(reply: ChatMessage, turn: Turn) -> ChatCompletion:
    usage = reply.usage
    return ChatCompletion(
        id=f"chatcmpl-{turn.message.message_id}",
        created=int(reply.created_at.timestamp()),
        model=reply.model or turn.model,
        choices=[Choice(message=AssistantMessage(content=reply.content))],
        usage=CompletionUsage(
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            total_tokens=usage.total_tokens if usage else 0,
        ),
    )


def _models(settings: Settings) -> list[str]:
    available = settings.available_providers()
    names = [settings.default_model]
    names += [m for m in KNOWN_MODELS if split_model(m)[0] in available]
    return list(dict.fromkeys(names))


def _card(model: str) -> ModelCard:
    return ModelCard(id=model, owned_by=model.partition("/")[0])


# ---- streaming ------------------------------------------------------------------------------


@dataclass
class ChunkStream:
    """A turn's events (api/streaming.py) as `chat.completion.chunk`s.

    Text is sent as it comes. After a `restart` the retry's text is held until it is longer
    than what the client has of that step: if it begins with that text, only the rest is sent;
    if it differs, the stream ends with an error, since a chunk cannot take text back.
    """

    completion_id: str
    created: int
    model: str
    include_usage: bool
    reply_url: str
    finished: bool = False
    _step: int = 0
    _shown: str = ""  # what the client has of step `_step`
    _redo: str | None = None  # the retry's text so far, while it is held
    _payloads: list[dict[str, Any] | str] = field(default_factory=list)

    async def sse(self, items: AsyncIterator[StreamEvent | None]) -> AsyncIterator[bytes]:
        yield _data(self._chunk({"role": "assistant", "content": ""}))
        async for item in items:
            if item is None:
                yield KEEPALIVE
                continue
            for payload in self.feed(item):
                yield _data(payload)
            if self.finished:
                return
        if not self.finished:  # the events ended without saying how the turn did
            yield _data(self._fail(503, "the stream ended early", "stream_interrupted"))

    def feed(self, event: StreamEvent) -> list[dict[str, Any] | str]:
        """What to send for one event: chunk objects, error objects, or "[DONE]"."""
        self._payloads = []
        data = event.data
        if event.event == "delta":
            self._delta(int(data["step"]), str(data["text"]))
        elif event.event == "restart" and int(data["step"]) == self._step and self._shown:
            self._redo = ""
        elif event.event == "error":
            self._payloads.append(self._fail(int(data["status"]), str(data["detail"])))
        elif event.event == "turn_completed":
            self._completed(data)
        return self._payloads

    def _delta(self, step: int, text: str) -> None:
        if step != self._step:
            if self._diverged():
                return
            self._step, self._shown, self._redo = step, "", None
        if self._redo is None:
            self._send_text(text)
            return
        self._redo += text
        if len(self._redo) <= len(self._shown):
            if not self._shown.startswith(self._redo):
                self._diverged()
            return
        if not self._redo.startswith(self._shown):
            self._diverged()
            return
        rest, self._redo = self._redo[len(self._shown) :], None
        self._send_text(rest)

    def _send_text(self, text: str) -> None:
        if text:
            self._shown += text
            self._payloads.append(self._chunk({"content": text}))

    def _diverged(self) -> bool:
        """True (and the stream ends) if a held retry is not exactly what the client has."""
        if self._redo is None or self._redo == self._shown or self.finished:
            return False
        self._payloads.append(
            self._fail(
                502,
                "the model call failed mid-reply and its retry wrote a different text than "
                "the one streamed so far; the reply, as stored, is at GET " + self.reply_url,
                "reply_restarted",
            )
        )
        return True

    def _completed(self, data: dict[str, Any]) -> None:
        if self._diverged():
            return
        model = str(data.get("model") or self.model)
        if data.get("error"):
            self._payloads.append(self._fail(502, str(data["error"])))
            return
        self._payloads.append(self._chunk({}, finish_reason="stop", model=model))
        if self.include_usage:
            usage = data.get("usage") or {}
            prompt, completion_ = (
                int(usage.get("prompt_tokens", 0)),
                int(usage.get("completion_tokens", 0)),
            )
            self._payloads.append(
                {
                    **self._base(model),
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion_,
                        "total_tokens": prompt + completion_,
                    },
                }
            )
        self._payloads.append("[DONE]")
        self.finished = True

    def _fail(self, status: int, message: str, code: str | None = None) -> dict[str, Any]:
        self.finished = True
        return error_body(status, message, code=code)

    def _base(self, model: str) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": model,
        }

    def _chunk(
        self, delta: dict[str, Any], finish_reason: str | None = None, model: str | None = None
    ) -> dict[str, Any]:
        chunk = {
            **self._base(model or self.model),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk


def _data(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {text}\n\n".encode()
