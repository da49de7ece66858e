"""The worker's internal HTTP endpoint that hands live reply text to gateways.

A gateway finds the worker running a model call from Temporal itself: the pending activity's
`last_worker_identity` carries this server's address (`common/live_streams.py`). Nothing else is
needed in the local stack, and no reply text passes through Temporal while it streams.

`GET /streams?workflow_id=&turn=&step=&attempt=&offset=` answers NDJSON lines:
`{"text": "...", "end": 123}` for each piece (end = offset after it), then one
`{"outcome": "completed" | "failed" | "replaced"}`. Reads are paced by the reader: the server
writes the next piece only after the previous one was taken by the connection.
"""

import asyncio
import contextlib
import hmac
import json
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from activities.stream_hub import LiveText, Reading, StreamHub, TooManyReaders
from common.live_streams import TOKEN_HEADER
from common.settings import Settings


def stream_app(hub: StreamHub, settings: Settings) -> Starlette:
    token = settings.stream_token.get_secret_value() if settings.stream_token else None

    async def read_stream(request: Request) -> Response:
        if token is not None and not hmac.compare_digest(
            request.headers.get(TOKEN_HEADER, ""), token
        ):
            return JSONResponse({"detail": "missing or wrong stream token"}, status_code=401)
        try:
            params = request.query_params
            key = (
                params["workflow_id"],
                int(params["turn"]),
                int(params["step"]),
                int(params["attempt"]),
            )
            offset = int(params.get("offset", "0"))
        except (KeyError, ValueError):
            return JSONResponse({"detail": "workflow_id, turn, step, attempt"}, status_code=400)
        live = hub.get(key)
        if live is None:
            return JSONResponse({"detail": "no such stream on this worker"}, status_code=404)
        try:
            reading = Reading(live, settings.max_stream_subscribers)
        except TooManyReaders as err:
            return JSONResponse({"detail": str(err)}, status_code=429)
        return StreamingResponse(
            _lines(live, reading, max(offset, 0)), media_type="application/x-ndjson"
        )

    return Starlette(routes=[Route("/streams", read_stream)])


async def _lines(live: LiveText, reading: Reading, offset: int) -> AsyncIterator[bytes]:
    try:
        while True:
            piece = await live.read(offset)
            if piece:
                offset += len(piece)
                yield _line({"text": piece, "end": offset})
            elif live.outcome is not None:
                yield _line({"outcome": live.outcome})
                return
    finally:
        reading.close()


def _line(body: dict[str, object]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def _reachable_host(settings: Settings) -> str:
    """Bound to every interface (a container): advertise this host's own address."""
    host = settings.stream_host
    if host not in ("0.0.0.0", "::", ""):
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return socket.gethostname()


class _QuietServer(uvicorn.Server):
    """The worker owns the process's signals; this server must not take them over."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving_streams(hub: StreamHub, settings: Settings) -> AsyncIterator[str]:
    """Serve `hub` while the block runs; yields the URL gateways should use."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.stream_host, settings.stream_port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        stream_app(hub, settings),
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises why it could not start
            await asyncio.sleep(0.01)
        yield settings.stream_advertise_url or f"http://{_reachable_host(settings)}:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
