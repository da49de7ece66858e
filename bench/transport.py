"""A lean HTTP/1.1 transport for the benchmark's one shared `httpx.AsyncClient`.

httpx's default transport (httpcore) spends milliseconds of CPU per request once a couple
of hundred requests are in flight (encode/httpx#3215): measured here, 6 ms per /healthz
call at 200 concurrent against 0.8 ms in the gateway. On a 2-core machine the client's CPU
is taken from the server being measured, so the default transport would charge our side
for the load generator. This one keeps a free list of keep-alive connections: O(1) a call.
It speaks only what the gateway answers (Content-Length bodies, no compression).
"""

import asyncio
import time
from dataclasses import dataclass

import httpx

IDLE_EXPIRY = 2.0  # below uvicorn's 5 s keep-alive timeout, so a reused socket is never stale


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def close(self) -> None:
        self.writer.close()


class KeepAliveTransport(httpx.AsyncBaseTransport):
    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._idle: list[_Connection] = []

    async def _connection(self, request: httpx.Request) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since < IDLE_EXPIRY and not conn.reader.at_eof():
                return conn
            conn.close()
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        except OSError as err:
            raise httpx.ConnectError(str(err), request=request) from err
        return _Connection(reader, writer)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        conn = await self._connection(request)
        try:
            return await self._exchange(conn, request, body)
        except (OSError, asyncio.IncompleteReadError) as err:
            conn.close()
            raise httpx.ReadError(repr(err), request=request) from err
        except BaseException:
            conn.close()
            raise

    async def _exchange(
        self, conn: _Connection, request: httpx.Request, body: bytes
    ) -> httpx.Response:
        head = [f"{request.method} {request.url.raw_path.decode()} HTTP/1.1".encode()]
        head += [name + b": " + value for name, value in request.headers.raw]
        conn.writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        status_line = await conn.reader.readline()
        if not status_line:
            raise httpx.RemoteProtocolError("connection closed before a response")
        status = int(status_line.split(b" ", 2)[1])
        headers: list[tuple[bytes, bytes]] = []
        length = 0
        keep_alive = True
        while (line := await conn.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.rstrip(b"\r\n").partition(b":")
            value = value.strip()
            headers.append((name, value))
            lowered = name.lower()
            if lowered == b"content-length":
                length = int(value)
            elif lowered == b"transfer-encoding":
                raise httpx.RemoteProtocolError("chunked responses are not supported here")
            elif lowered == b"connection" and value.lower() == b"close":
                keep_alive = False
        content = await conn.reader.readexactly(length) if length else b""
        if keep_alive:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
