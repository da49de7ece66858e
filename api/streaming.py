"""A turn as Server-Sent Events, rebuilt by any gateway from Temporal and the worker's live text.

Two sources, no state in the gateway:
- what the workflow has recorded (`turn_view` query): finished model steps, tool calls and
  results, the reply. Anything here is final.
- the text of the model call running now, read from the worker that runs it (found through
  Temporal, `SessionService.progress`); a failed attempt's text is withdrawn with a
  `restart` event.

Every event's id is its position in the turn (`Cursor`), so `Last-Event-ID` resumes exactly
after it through any gateway, and two subscribers of one turn see the same ids. Pacing: the
next piece is fetched only when the client has taken the last, so a slow client costs the
gateway one piece of buffer and the worker nothing beyond the reply itself.
"""

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from api.errors import ApiError
from api.service import LiveCall, Progress, SessionService
from common.ids import workflow_id
from common.live_streams import TOKEN_HEADER
from common.settings import Settings
from workflows.messages import ChatMessage, TurnView, TurnViewRequest

log = logging.getLogger("api.streaming")

START_POLLS = 50
FAST_POLL_SECONDS = 0.005
FAST_POLL_WINDOW_SECONDS = 0.5
POLL_MAX_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0

# Phases of a model step, in the order their events come.
STARTED, TEXT, CALL, RESULT, ERROR, DONE = range(6)


@dataclass(frozen=True)
class Cursor:
    """A position in a turn; encoded as the SSE event id `turn.step.phase.attempt.offset.index`.

    In the TEXT phase, (attempt, offset) say how much of which attempt's text the client has;
    elsewhere `index` counts tool calls or results within the step.
    """

    turn: int
    step: int = 0
    phase: int = STARTED
    attempt: int = 0
    offset: int = 0
    index: int = 0

    def encode(self) -> str:
        return ".".join(
            str(v)
            for v in (self.turn, self.step, self.phase, self.attempt, self.offset, self.index)
        )

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        """Raises ValueError for anything this API did not write."""
        parts = [int(p) for p in text.split(".")]
        if len(parts) != 6 or min(parts) < 0 or parts[2] > DONE or parts[0] < 1:
            raise ValueError(text)
        return cls(*parts)

    def before(self, step: int, phase: int, index: int = 0) -> bool:
        """True if the event at (step, phase, index) comes after this position."""
        return (self.step, self.phase, self.index) < (step, phase, index)


@dataclass(frozen=True)
class StreamEvent:
    cursor: Cursor | None  # None: a failure before the client had any event
    event: str
    data: dict[str, Any]

    def sse(self) -> bytes:
        body = json.dumps(self.data, separators=(",", ":"))
        event_id = f"id: {self.cursor.encode()}\n" if self.cursor else ""
        return f"{event_id}event: {self.event}\ndata: {body}\n\n".encode()


KEEPALIVE = b": keepalive\n\n"


class Subscribers:
    """Live streams per session in this gateway process, bounded."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: Counter[str] = Counter()

    def enter(self, key: str) -> "Lease":
        if self._open[key] >= self._limit:
            raise ApiError(
                429,
                f"this session already has {self._limit} live streams open on this gateway; "
                "close one, or read the reply with GET /v1/sessions/{id}/messages/{message_id}",
            )
        self._open[key] += 1
        return Lease(self, key)

    def _leave(self, key: str) -> None:
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]


@dataclass
class Lease:
    subscribers: Subscribers
    key: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.subscribers._leave(self.key)


@dataclass
class TurnStream:
    """One client's stream of one turn."""

    service: SessionService
    http: httpx.AsyncClient
    settings: Settings
    owner: str
    session_id: str
    message_id: str
    cursor: Cursor | None = None
    _sent_at: float = field(default_factory=time.monotonic)
    _seen: Progress | None = None

    async def items(self, view: TurnView) -> AsyncIterator[StreamEvent | None]:
        """The turn's events after `cursor`, ending with `turn_completed` (or `error`); None
        when a keepalive is due (nothing has happened for KEEPALIVE_SECONDS)."""
        try:
            async for item in self._events(view):
                yield item
        except ApiError as err:
            yield self._failure(err.status, err.detail)
        except Exception as err:  # the response has started: say so in-band
            log.warning("stream of %s broke off: %s", self.message_id, type(err).__name__)
            yield self._failure(503, "the session could not be read; reconnect to resume")

    def _failure(self, status: int, detail: str) -> StreamEvent:
        """An error event; its id repeats the last position, so a reconnect resumes there."""
        return StreamEvent(self.cursor, "error", {"status": status, "detail": detail})

    async def _events(self, view: TurnView) -> AsyncIterator[StreamEvent | None]:
        progress_at = time.monotonic()
        while True:
            progressed = False
            for event in self._recorded(view):
                progressed = True
                yield self._send(event)
            if view.state == "done":
                return
            if view.model_step is not None and view.turn is not None:
                async for event in self._live(view.turn, view.model_step):
                    progressed = True
                    yield self._send(event)
            if progressed:
                progress_at = time.monotonic()
            # The workflow is queried again only once Temporal shows it moved on: a query
            # takes a workflow task of its own and would hold up the turn it is watching.
            while not await self._moved_on():
                if time.monotonic() - self._sent_at > KEEPALIVE_SECONDS:
                    self._sent_at = time.monotonic()
                    yield None
                await asyncio.sleep(_poll_interval(time.monotonic() - progress_at))
            view = await self.service.turn_view(
                self.owner, self.session_id, TurnViewRequest(message_id=self.message_id)
            )

    async def _moved_on(self) -> bool:
        """True when the run's history or its model call changed since the last look (the
        first look always counts as a change, so nothing between the first query and it is
        missed)."""
        progress = await self.service.progress(self.owner, self.session_id)
        moved, self._seen = progress != self._seen, progress
        return moved

    def _send(self, event: StreamEvent) -> StreamEvent:
        self.cursor = event.cursor
        self._sent_at = time.monotonic()
        return event

    # ---- what the workflow recorded ----------------------------------------------------

    def _recorded(self, view: TurnView) -> Iterator[StreamEvent]:
        turn = view.turn
        if turn is None:
            return
        if self._at(turn).before(0, STARTED):
            yield StreamEvent(
                Cursor(turn), "turn_started", {"turn": turn, "message_id": view.message_id}
            )
        step = results = 0
        for message in view.messages:
            if message.role == "assistant":
                step, results = step + 1, 0
                yield from self._text(turn, step, message)
                for index, call in enumerate(message.tool_calls):
                    if self._at(turn).before(step, CALL, index):
                        yield StreamEvent(
                            Cursor(turn, step, CALL, index=index),
                            "tool_call",
                            {
                                "step": step,
                                "id": call.id,
                                "name": call.name,
                                "arguments": call.arguments,
                                "needs_approval": call.approval is not None,
                            },
                        )
                if message.reply_to is not None:
                    yield from self._completed(turn, step, message)
            elif message.role == "tool" and step:
                # Results follow their step's calls in call order (the workflow's _run_tools).
                results += 1
                if self._at(turn).before(step, RESULT, results - 1):
                    yield StreamEvent(
                        Cursor(turn, step, RESULT, index=results - 1),
                        "tool_result",
                        {
                            "step": step,
                            "call_id": message.tool_call_id,
                            "name": message.tool_name,
                            "content": message.content,
                            "is_error": message.is_error,
                            "truncated": message.truncated,
                        },
                    )

    def _text(self, turn: int, step: int, message: ChatMessage) -> Iterator[StreamEvent]:
        """The rest of a finished step's text, after whatever part of it the client has."""
        at = self._at(turn)
        if not at.before(step, TEXT + 1):
            return
        attempt = message.attempt or 1
        held = at.offset if (at.step, at.phase) == (step, TEXT) else 0
        if held and (at.attempt != attempt or held > len(message.content)):
            yield _restart(turn, step, attempt)
            held = 0
        if len(message.content) > held:
            yield _delta(turn, step, attempt, message.content[held:], len(message.content))

    def _completed(self, turn: int, step: int, reply: ChatMessage) -> Iterator[StreamEvent]:
        if reply.error is not None and self._at(turn).before(step, ERROR):
            yield StreamEvent(
                Cursor(turn, step, ERROR), "error", {"status": 502, "detail": reply.error}
            )
        if self._at(turn).before(step, DONE):
            yield StreamEvent(
                Cursor(turn, step, DONE),
                "turn_completed",
                {
                    "message_id": reply.id,
                    "reply_to": reply.reply_to,
                    "seq": reply.seq,
                    "model": reply.model,
                    "usage": reply.usage.model_dump() if reply.usage else None,
                    "error": reply.error,
                },
            )

    def _at(self, turn: int) -> Cursor:
        return self.cursor or Cursor(turn, phase=-1)

    # ---- the model call running now ----------------------------------------------------

    async def _started_call(self) -> LiveCall | None:
        """The model call once a worker has it. Between scheduling and start (usually a few
        ms) Temporal alone is polled, quickly: this wait is most of the time to first token."""
        for _ in range(START_POLLS):
            found = (await self.service.progress(self.owner, self.session_id)).call
            if found is None or found.started:
                return found
            await asyncio.sleep(FAST_POLL_SECONDS)
        return None

    async def _live(self, turn: int, step: int) -> AsyncIterator[StreamEvent]:
        at = self._at(turn)
        if not at.before(step, TEXT + 1):
            return
        found = await self._started_call()
        if found is None or found.url is None:
            return
        url, attempt = found.url, found.attempt
        held = at.offset if (at.step, at.phase) == (step, TEXT) else 0
        if held and at.attempt != attempt:
            yield _restart(turn, step, attempt)
            held = 0
        params: dict[str, str | int] = {
            "workflow_id": workflow_id(self.owner, self.session_id),
            "turn": turn,
            "step": step,
            "attempt": attempt,
            "offset": held,
        }
        headers = {}
        if self.settings.stream_token is not None:
            headers[TOKEN_HEADER] = self.settings.stream_token.get_secret_value()
        try:
            async with self.http.stream(
                "GET", f"{url}/streams", params=params, headers=headers
            ) as response:
                if response.status_code == 429:
                    raise ApiError(429, "too many readers of this reply on its worker")
                if response.status_code != 200:
                    return
                async for line in response.aiter_lines():
                    piece = json.loads(line) if line else {}
                    if "text" in piece:
                        yield _delta(turn, step, attempt, piece["text"], int(piece["end"]))
                    elif piece.get("outcome") == "replaced":
                        # The provider's final text differs from its pieces: start over
                        # from the recorded reply.
                        yield _restart(turn, step, attempt)
        except (httpx.HTTPError, json.JSONDecodeError, KeyError, ValueError):
            return  # the worker went away or broke off: Temporal says what happens next


def _poll_interval(since_progress: float) -> float:
    """Every 5 ms just after something happened (the next step usually follows within
    milliseconds), then a tenth of the quiet time so far, at most a second (tools,
    approvals, a retry's backoff)."""
    if since_progress < FAST_POLL_WINDOW_SECONDS:
        return FAST_POLL_SECONDS
    return min(since_progress / 10, POLL_MAX_SECONDS)


def _delta(turn: int, step: int, attempt: int, text: str, end: int) -> StreamEvent:
    return StreamEvent(
        Cursor(turn, step, TEXT, attempt, end),
        "delta",
        {"step": step, "attempt": attempt, "text": text},
    )


def _restart(turn: int, step: int, attempt: int) -> StreamEvent:
    """The text of this step so far is withdrawn; `attempt` writes it again from the start."""
    return StreamEvent(
        Cursor(turn, step, TEXT, attempt, 0), "restart", {"step": step, "attempt": attempt}
    )


def resume_point(last_event_id: str | None) -> Cursor | None:
    if not last_event_id:
        return None
    try:
        return Cursor.decode(last_event_id.strip())
    except ValueError as err:
        raise ApiError(
            400,
            f"Last-Event-ID {last_event_id!r} is not an event id of this API; reconnect "
            "without it to get the turn from the start",
        ) from err


class LiveStreams:
    """Opens turn streams for the routes; one per gateway process."""

    def __init__(self, service: SessionService, settings: Settings) -> None:
        self._service = service
        self._settings = settings
        self._subscribers = Subscribers(settings.max_stream_subscribers)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(5.0, read=None), limits=httpx.Limits(max_connections=1000)
        )

    async def open(
        self,
        owner: str,
        session_id: str,
        req: TurnViewRequest,
        after: Cursor | None,
        just_sent: bool = False,
    ) -> StreamingResponse:
        subscription = await self.subscribe(owner, session_id, req, after, just_sent)

        async def body() -> AsyncIterator[bytes]:
            async for item in subscription.items():
                yield KEEPALIVE if item is None else item.sse()

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(subscription.release),
        )

    async def subscribe(
        self,
        owner: str,
        session_id: str,
        req: TurnViewRequest,
        after: Cursor | None,
        just_sent: bool = False,
    ) -> "Subscription":
        """A turn's events for one reader; what `open` serves as SSE. Raises ApiError (404,
        400, 429) before anything is read; call `release` if `items` is never iterated."""
        view = await self._service.turn_view(owner, session_id, req)
        waited = 0.0
        while just_sent and view.state == "unknown" and waited < JUST_SENT_GRACE_SECONDS:
            await asyncio.sleep(0.05)  # a resumed session loads its history first
            waited += 0.05
            view = await self._service.turn_view(owner, session_id, req)
        if view.state == "unknown" or view.message_id is None:
            raise ApiError(404, _nothing_to_stream(session_id, req))
        if after is not None and view.turn is not None and after.turn != view.turn:
            raise ApiError(
                400, f"Last-Event-ID is from turn {after.turn}, this message is turn {view.turn}"
            )
        lease = self._subscribers.enter(workflow_id(owner, session_id))
        stream = TurnStream(
            self._service, self._http, self._settings, owner, session_id, view.message_id, after
        )
        return Subscription(stream, view, lease)

    async def aclose(self) -> None:
        await self._http.aclose()


JUST_SENT_GRACE_SECONDS = 5.0


@dataclass
class Subscription:
    """One reader's place among a session's live streams, and its turn's events."""

    stream: TurnStream
    view: TurnView
    lease: Lease

    async def items(self) -> AsyncIterator[StreamEvent | None]:
        try:
            async for item in self.stream.items(self.view):
                yield item
        finally:
            self.lease.release()

    def release(self) -> None:
        self.lease.release()


def _nothing_to_stream(session_id: str, req: TurnViewRequest) -> str:
    if req.message_id is not None:
        return f"message {req.message_id!r} not found in session {session_id!r}"
    if req.turn is not None:
        return f"turn {req.turn} not found in session {session_id!r}"
    return (
        f"session {session_id!r} has no turn in progress or queued; its replies are at "
        f"GET /v1/sessions/{session_id}/messages"
    )
