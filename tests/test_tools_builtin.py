"""The built-in tools, through the registry as the model will call them.

http_fetch runs against a real HTTP server on 127.0.0.1 started by the test; nothing else
touches the network.
"""

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tools import ToolContext, ToolRegistry, ToolResult
from tools.builtin import HttpFetchConfig, builtin_registry, make_http_fetch
from tools.builtin.calculator import evaluate
from tools.builtin.dates import resolve

CONTEXT = ToolContext(session_id="s-1", turn=1, call_id="c-1")
WEDNESDAY = dt.date(2025, 7, 2)
FIXED_INSTANT = dt.datetime(2025, 7, 4, 2, 30, 15, 123456, tzinfo=dt.UTC)


def fixed_clock() -> dt.datetime:
    return FIXED_INSTANT


@pytest.fixture
def registry() -> ToolRegistry:
    return builtin_registry(clock=fixed_clock)


async def call(registry: ToolRegistry, name: str, arguments: dict[str, Any]) -> ToolResult:
    return await registry.call(name, json.dumps(arguments), CONTEXT)


async def call_json(registry: ToolRegistry, name: str, arguments: dict[str, Any]) -> Any:
    result = await call(registry, name, arguments)
    assert result.ok, result.content
    return json.loads(result.content)


# --- resolve_date -------------------------------------------------------------------------


async def test_july_4th_2025_is_a_friday(registry: ToolRegistry) -> None:
    """Seed 003: "What day of the week is July 4th, 2025?"."""
    answer = await call_json(registry, "resolve_date", {"expression": "July 4th, 2025"})
    assert answer["date"] == "2025-07-04"
    assert answer["weekday"] == "Friday"


@pytest.mark.parametrize(
    "expression",
    [
        "July 4th, 2025",
        "2025-07-04",
        "4 July 2025",
        "07/04/2025",
        "Jul 4 2025",
        "Friday, July 4, 2025",
        "2025-07-04T23:59:00",
        "July 4th",
    ],
)
def test_absolute_dates(expression: str) -> None:
    assert resolve(expression, WEDNESDAY) == dt.date(2025, 7, 4)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("today", "2025-07-02"),
        ("Tomorrow", "2025-07-03"),
        ("yesterday", "2025-07-01"),
        ("the day after tomorrow", "2025-07-04"),
        ("in 3 days", "2025-07-05"),
        ("in a week", "2025-07-09"),
        ("in two months", "2025-09-02"),
        ("2 weeks ago", "2025-06-18"),
        ("10 days from now", "2025-07-12"),
        ("a year ago", "2024-07-02"),
        ("next week", "2025-07-09"),
        ("next Friday", "2025-07-04"),
        ("next wednesday", "2025-07-09"),
        ("last Monday", "2025-06-30"),
        ("last Wednesday", "2025-06-25"),
        ("this Sunday", "2025-07-06"),
        ("this wednesday", "2025-07-02"),
        ("Friday", "2025-07-04"),
        ("on Tuesday?", "2025-07-08"),
        ("coming sat", "2025-07-05"),
        ("friday next week", "2025-07-11"),
        ("monday last week", "2025-06-23"),
    ],
)
def test_relative_dates(expression: str, expected: str) -> None:
    assert resolve(expression, WEDNESDAY).isoformat() == expected


async def test_next_friday_through_the_registry(registry: ToolRegistry) -> None:
    answer = await call_json(
        registry, "resolve_date", {"expression": "next Friday", "today": "2025-07-02"}
    )
    assert answer == {
        "expression": "next Friday",
        "date": "2025-07-04",
        "weekday": "Friday",
        "today": "2025-07-02",
        "days_from_today": 2,
        "timezone": "UTC",
    }


async def test_today_depends_on_the_time_zone(registry: ToolRegistry) -> None:
    # 02:30 UTC on July 4th is still the evening of July 3rd in Los Angeles.
    utc = await call_json(registry, "resolve_date", {"expression": "today"})
    assert (utc["date"], utc["weekday"]) == ("2025-07-04", "Friday")
    la = await call_json(
        registry, "resolve_date", {"expression": "today", "timezone": "America/Los_Angeles"}
    )
    assert (la["date"], la["weekday"], la["timezone"]) == (
        "2025-07-03",
        "Thursday",
        "America/Los_Angeles",
    )
    tokyo = await call_json(
        registry, "resolve_date", {"expression": "tomorrow", "timezone": "Asia/Tokyo"}
    )
    assert tokyo["date"] == "2025-07-05"


async def test_bad_date_input_is_an_error_result(registry: ToolRegistry) -> None:
    zone = await call(registry, "resolve_date", {"expression": "today", "timezone": "Mars/Base"})
    assert not zone.ok and "Unknown time zone 'Mars/Base'" in zone.content
    traversal = await call(
        registry, "resolve_date", {"expression": "today", "timezone": "../../etc/passwd"}
    )
    assert not traversal.ok and "Unknown time zone" in traversal.content
    nonsense = await call(registry, "resolve_date", {"expression": "the twelfth of never"})
    assert not nonsense.ok and "Could not understand the date" in nonsense.content
    assert "next Friday" in nonsense.content  # the error shows what would work
    huge = await call(registry, "resolve_date", {"expression": "in 999999 years"})
    assert not huge.ok and "out of range" in huge.content
    impossible = await call(registry, "resolve_date", {"expression": "February 30, 2025"})
    assert not impossible.ok and "out of range" in impossible.content
    empty = await call(registry, "resolve_date", {"expression": ""})
    assert not empty.ok and "field 'expression'" in empty.content
    bad_today = await call(registry, "resolve_date", {"expression": "today", "today": "soon"})
    assert not bad_today.ok and "field 'today'" in bad_today.content


def test_resolve_raises_value_error() -> None:
    with pytest.raises(ValueError, match="Could not understand"):
        resolve("next blursday", WEDNESDAY)
    with pytest.raises(ValueError, match="Could not understand"):
        resolve("next friday next week", WEDNESDAY)


# --- calculate --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("-7 % 3", "2"),
        ("2 ** 10", "1024"),
        ("2 ** -1", "0.5"),
        ("-(3 - 5)", "2"),
        ("+4", "4"),
        ("0.1 + 0.2", "0.3"),
        ("sqrt(16)", "4"),
        ("abs(-3.5)", "3.5"),
        ("round(2.675, 1)", "2.7"),
        ("round(7.5)", "8"),
        ("min(3, 1, 2) + max(4, 9)", "10"),
        ("floor(2.7) + ceil(2.1)", "5"),
        ("log(e)", "1"),
        ("log(8, 2)", "3"),
        ("pi", "3.14159265358979"),
        ("2 * pi * 10", "62.8318530717959"),
        ("2 ** 1000 % 1000", "376"),
        ("12345678901234567890 * 98765432109876543210", "1219326311370217952237463801111263526900"),
    ],
)
async def test_calculate(registry: ToolRegistry, expression: str, expected: str) -> None:
    result = await call(registry, "calculate", {"expression": expression})
    assert (result.ok, result.content) == (True, expected)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "Function '__import__' is not allowed"),
        ("__import__('os').system('true')", "Attribute access is not allowed"),
        ("(1).__class__", "Attribute access is not allowed"),
        ("().__class__.__bases__[0].__subclasses__()", "Attribute access is not allowed"),
        ("x + 1", "Unknown name 'x'"),
        ("open('/etc/passwd')", "Function 'open' is not allowed"),
        ("eval('1')", "Function 'eval' is not allowed"),
        ("'a' * 3", "Only numbers are allowed"),
        ("True + 1", "Only numbers are allowed"),
        ("[1, 2]", "Unsupported syntax: List"),
        ("lambda: 1", "Unsupported syntax: Lambda"),
        ("1 if 1 else 2", "Unsupported syntax: IfExp"),
        ("1 < 2", "Unsupported syntax: Compare"),
        ("2 ^ 3", "use ** for powers"),
        ("1 << 100000", "Operator LShift is not allowed"),
        ("9**9**9", "too large"),
        ("10 ** 100000", "too large"),
        ("2 ** 10000 * 2 ** 10000", "too large"),
        ("1 / 0", "Division by zero"),
        ("5 % 0", "Division by zero"),
        ("0 ** -1", "Division by zero"),
        ("10.0 ** 400", "too large"),
        ("1e308 * 10", "not a finite number"),
        ("(-8) ** 0.5", "not a real number"),
        ("sqrt(-1)", "sqrt(): math domain error"),
        ("round(1.5, 1000)", "digits must be a whole number"),
        ("max()", "max() got 0 arguments"),
        ("sqrt(x=4)", "plain positional arguments"),
        ("1 +", "Not a valid arithmetic expression"),
        ("import os", "Not a valid arithmetic expression"),
    ],
)
async def test_calculate_refuses(registry: ToolRegistry, expression: str, message: str) -> None:
    result = await call(registry, "calculate", {"expression": expression})
    assert not result.ok
    assert message in result.content


async def test_calculate_bounds_the_input(registry: ToolRegistry) -> None:
    long = await call(registry, "calculate", {"expression": "1+" * 300 + "1"})
    assert not long.ok and "field 'expression'" in long.content
    with pytest.raises(ValueError, match="longer than 500"):
        evaluate("1+" * 300 + "1")
    nested = await call(registry, "calculate", {"expression": "(" * 240 + "1" + ")" * 240})
    assert not nested.ok and "Not a valid arithmetic expression" in nested.content


async def test_huge_exponent_fails_fast(registry: ToolRegistry) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await call(registry, "calculate", {"expression": "9**9**9**9"})
    assert not result.ok and "too large" in result.content
    assert loop.time() - started < 1.0


# --- current_time -----------------------------------------------------------------------------


async def test_current_time_uses_the_injected_clock(registry: ToolRegistry) -> None:
    utc = await call_json(registry, "current_time", {})
    assert utc == {
        "timezone": "UTC",
        "iso": "2025-07-04T02:30:15Z",
        "weekday": "Friday",
        "utc_offset": "+00:00",
    }
    paris = await call_json(registry, "current_time", {"timezone": "Europe/Paris"})
    assert (paris["iso"], paris["weekday"], paris["utc_offset"]) == (
        "2025-07-04T04:30:15+02:00",
        "Friday",
        "+02:00",
    )
    assert dt.datetime.fromisoformat(paris["iso"]) == FIXED_INSTANT.replace(microsecond=0)
    la = await call_json(registry, "current_time", {"timezone": "America/Los_Angeles"})
    assert (la["iso"], la["weekday"]) == ("2025-07-03T19:30:15-07:00", "Thursday")
    kolkata = await call_json(registry, "current_time", {"timezone": "Asia/Kolkata"})
    assert kolkata["utc_offset"] == "+05:30"


async def test_current_time_rejects_unknown_zones(registry: ToolRegistry) -> None:
    result = await call(registry, "current_time", {"timezone": "Nowhere/Special"})
    assert not result.ok and "Unknown time zone 'Nowhere/Special'" in result.content


def test_builtin_registry_contents() -> None:
    assert builtin_registry().names() == ["calculate", "current_time", "resolve_date"]
    config = HttpFetchConfig(allowed_hosts=frozenset({"example.org"}))
    with_http = builtin_registry(http=config)
    assert with_http.names() == ["calculate", "current_time", "http_fetch", "resolve_date"]
    fetch = with_http.get("http_fetch")
    assert fetch is not None and "example.org" in fetch.description
    assert fetch.definition().parameters["required"] == ["url"]


# --- http_fetch -------------------------------------------------------------------------------


class LocalServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 with the behaviours http_fetch must cope with."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.requests: list[str] = []
        self.port = 0

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await reader.readline()
            while (await reader.readline()).strip():
                pass
            path = request_line.split()[1].decode()
            self.requests.append(path)
            await self.respond(path, writer)
        finally:
            writer.close()

    async def respond(self, path: str, writer: asyncio.StreamWriter) -> None:
        if path == "/hello":
            await self.send(writer, 200, b"hello from the tools test")
        elif path == "/big":
            await self.send(writer, 200, b"x" * 50_000)
        elif path == "/latin1":
            await self.send(writer, 200, "café".encode("latin-1"), "text/plain; charset=latin-1")
        elif path == "/missing":
            await self.send(writer, 404, b"no such page")
        elif path == "/slow":
            await self.head(writer, 200, 10)
            await self.wait_released()
        elif path == "/drip":
            await self.head(writer, 200, 1000)
            for _ in range(1000):
                writer.write(b".")
                await writer.drain()
                if await self.wait_released(0.05):
                    break
        elif path == "/redirect-home":
            await self.send(writer, 302, b"", location="/hello")
        elif path == "/redirect-away":
            await self.send(writer, 302, b"", location=self.url("/hello", host="localhost"))
        elif path == "/redirect-loop":
            await self.send(writer, 307, b"", location="/redirect-loop")
        else:
            await self.send(writer, 500, b"unexpected path")

    async def head(
        self, writer: asyncio.StreamWriter, status: int, length: int, **extra: str
    ) -> None:
        content_type = extra.pop("content_type", "text/plain; charset=utf-8")
        lines = [
            f"HTTP/1.1 {status} Whatever",
            f"Content-Type: {content_type}",
            f"Content-Length: {length}",
            "Connection: close",
            *(f"{key.title()}: {value}" for key, value in extra.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()

    async def send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        **extra: str,
    ) -> None:
        await self.head(writer, status, len(body), content_type=content_type, **extra)
        writer.write(body)
        await writer.drain()

    async def wait_released(self, seconds: float = 10.0) -> bool:
        try:
            await asyncio.wait_for(self.release.wait(), seconds)
        except TimeoutError:
            return False
        return True


@pytest.fixture
async def local_server() -> AsyncIterator[LocalServer]:
    local = LocalServer()
    server = await local.start()
    yield local
    local.release.set()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.01)  # let the released handlers finish


def fetch_registry(max_bytes: int = 10_000, timeout_seconds: float = 5.0) -> ToolRegistry:
    registry = ToolRegistry(max_output_chars=100_000)
    registry.register(make_http_fetch({"127.0.0.1"}, max_bytes, timeout_seconds))
    return registry


async def test_fetch_from_an_allowed_host(local_server: LocalServer) -> None:
    result = await call(fetch_registry(), "http_fetch", {"url": local_server.url("/hello")})
    assert result.ok, result.content
    assert result.content.startswith("HTTP 200 Whatever\n")
    assert "Content-Type: text/plain; charset=utf-8" in result.content
    assert result.content.endswith("\n\nhello from the tools test")
    latin = await call(fetch_registry(), "http_fetch", {"url": local_server.url("/latin1")})
    assert latin.content.endswith("café")
    missing = await call(fetch_registry(), "http_fetch", {"url": local_server.url("/missing")})
    assert missing.ok and missing.content.startswith("HTTP 404")


async def test_fetch_refuses_other_hosts_and_schemes(local_server: LocalServer) -> None:
    registry = fetch_registry()
    other = await call(registry, "http_fetch", {"url": local_server.url("/hello", "localhost")})
    assert not other.ok and not other.retryable
    assert "host 'localhost' is not allowed; allowed hosts: 127.0.0.1" in other.content
    for url in ("ftp://127.0.0.1/file", "file:///etc/passwd", "127.0.0.1/hello"):
        refused = await call(registry, "http_fetch", {"url": url})
        assert not refused.ok, url
        assert "is not http or https" in refused.content
    invalid = await call(registry, "http_fetch", {"url": "http://[::1"})
    assert not invalid.ok and "Invalid URL" in invalid.content
    assert local_server.requests == []


async def test_fetch_caps_the_body(local_server: LocalServer) -> None:
    result = await call(
        fetch_registry(max_bytes=1000), "http_fetch", {"url": local_server.url("/big")}
    )
    assert result.ok
    body = result.content.split("\n\n", 1)[1]
    assert body == "x" * 1000 + "\n… [truncated: body exceeds 1000 bytes]"


async def test_fetch_times_out(local_server: LocalServer) -> None:
    registry = fetch_registry(timeout_seconds=0.3)
    loop = asyncio.get_running_loop()
    for path in ("/slow", "/drip"):  # stalled, and a trickle that beats any per-read timeout
        started = loop.time()
        result = await call(registry, "http_fetch", {"url": local_server.url(path)})
        assert not result.ok and result.retryable, path
        assert "timed out after 0.3 s" in result.content
        assert loop.time() - started < 2.0


async def test_fetch_checks_every_redirect(local_server: LocalServer) -> None:
    registry = fetch_registry()
    home = await call(registry, "http_fetch", {"url": local_server.url("/redirect-home")})
    assert home.ok and home.content.endswith("hello from the tools test")
    assert f"URL: {local_server.url('/hello')}" in home.content
    away = await call(registry, "http_fetch", {"url": local_server.url("/redirect-away")})
    assert not away.ok
    assert "Redirected to" in away.content and "'localhost' is not allowed" in away.content
    loop = await call(registry, "http_fetch", {"url": local_server.url("/redirect-loop")})
    assert not loop.ok and "Too many redirects" in loop.content
    assert local_server.requests.count("/hello") == 1  # the refused redirect was never followed


async def test_fetch_connection_failure_is_retryable() -> None:
    with_dead_port = fetch_registry(timeout_seconds=2.0)
    result = await call(with_dead_port, "http_fetch", {"url": "http://127.0.0.1:9/"})
    assert not result.ok and result.retryable
    assert "ConnectError" in result.content


def test_fetch_needs_an_allow_list() -> None:
    with pytest.raises(ValueError, match="at least one allowed host"):
        make_http_fetch(set(), 1000, 1.0)
