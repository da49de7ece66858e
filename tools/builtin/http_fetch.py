"""`http_fetch`: GET a page for the model, only from hosts an operator allowed.

Off unless configured: the model picks URLs, so the allow-list is the only thing standing
between it and internal services. Every redirect hop is checked against the same list, the
body is read as a stream and cut at `max_bytes` (after decompression, so a small gzip bomb
stays small), and one deadline covers the whole exchange, including a server that drips bytes.
"""

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from pydantic import BaseModel, Field

from tools.registry import RetryableToolError, Tool, ToolError, tool

DEFAULT_MAX_BYTES = 100_000
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class HttpFetchConfig:
    allowed_hosts: frozenset[str]
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS


class HttpFetchArgs(BaseModel):
    url: str = Field(
        min_length=1, max_length=2048, description="The http:// or https:// URL to GET."
    )


def make_http_fetch(
    allowed_hosts: Iterable[str],
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Tool[HttpFetchArgs]:
    """The tool for exactly these hosts (names or IPs, matched exactly, any port)."""
    hosts = frozenset(host.strip().lower().rstrip(".") for host in allowed_hosts if host.strip())
    if not hosts:
        raise ValueError("http_fetch needs at least one allowed host")
    if max_bytes < 1 or timeout_seconds <= 0:
        raise ValueError("http_fetch needs a positive max_bytes and timeout_seconds")

    @tool(
        name="http_fetch",
        description="Fetch a web page or API response with HTTP GET and return its status, "
        f"content type and text (at most {max_bytes} bytes). Allowed hosts: "
        f"{', '.join(sorted(hosts))}.",
        timeout_seconds=timeout_seconds + 5,  # the fetch's own deadline fires first
        max_attempts=2,
    )
    async def http_fetch(args: HttpFetchArgs) -> str:
        try:
            async with asyncio.timeout(timeout_seconds):
                return await _fetch(args.url, hosts, max_bytes, timeout_seconds, transport)
        except TimeoutError:
            raise RetryableToolError(
                f"Fetching {args.url} timed out after {timeout_seconds:g} s."
            ) from None
        except httpx.InvalidURL as exc:
            raise ToolError(f"Invalid URL {args.url!r}: {exc}.") from None
        except httpx.TransportError as exc:
            raise RetryableToolError(
                f"Fetching {args.url} failed: {type(exc).__name__}: {exc}"
            ) from None

    return http_fetch


def http_fetch_tool(config: HttpFetchConfig) -> Tool[HttpFetchArgs]:
    return make_http_fetch(config.allowed_hosts, config.max_bytes, config.timeout_seconds)


async def _fetch(
    raw_url: str,
    hosts: frozenset[str],
    max_bytes: int,
    timeout_seconds: float,
    transport: httpx.AsyncBaseTransport | None,
) -> str:
    url = _allowed(httpx.URL(raw_url.strip()), hosts)
    async with httpx.AsyncClient(
        follow_redirects=False, timeout=timeout_seconds, trust_env=False, transport=transport
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            async with client.stream("GET", url) as response:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    url = _allowed(url.join(location), hosts, redirect=True)
                    continue
                body, truncated = await _read_capped(response, max_bytes)
                return _render(response, body, truncated, max_bytes)
    raise ToolError(f"Too many redirects (more than {MAX_REDIRECTS}) from {raw_url}.")


def _allowed(url: httpx.URL, hosts: frozenset[str], *, redirect: bool = False) -> httpx.URL:
    via = "Redirected to" if redirect else "URL"
    if url.scheme not in ("http", "https"):
        raise ToolError(f"{via} {url} is not http or https.")
    host = url.host.lower().rstrip(".")
    if host not in hosts:
        raise ToolError(
            f"{via} {url}: host {host!r} is not allowed; allowed hosts: {', '.join(sorted(hosts))}."
        )
    return url


async def _read_capped(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            return bytes(body[:max_bytes]), True
    return bytes(body), False


def _render(response: httpx.Response, body: bytes, truncated: bool, max_bytes: int) -> str:
    try:
        text = body.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    lines = [
        f"HTTP {response.status_code} {response.reason_phrase}",
        f"URL: {response.url}",
        f"Content-Type: {response.headers.get('content-type', 'unknown')}",
        "",
        text,
    ]
    if truncated:
        lines.append(f"… [truncated: body exceeds {max_bytes} bytes]")
    return "\n".join(lines)
