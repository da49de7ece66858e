"""Any server speaking the OpenAI chat-completions API: OpenAI itself, vLLM, llama.cpp, Ollama.

Also home to the HTTP error mapping and event-stream reading the Anthropic provider shares, so
both describe failures the same way and the activity can decide retries from `status` alone.
"""

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import httpx

from activities.providers.base import (
    OnDelta,
    ProviderError,
    ProviderReply,
    ProviderRequest,
    estimate_prompt_tokens,
    parse_retry_after,
)
from workflows.messages import ContextMessage, ToolCall, Usage

_EXCERPT_CHARS = 300


class OpenAICompatibleProvider:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._secret = api_key
        # httpx never retries on its own; retries belong to the activity's retry policy.
        self._client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout), transport=transport
        )

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        payload = _payload(request)
        body = await post_json(self._client, self._url, payload, secret=self._secret)
        try:
            message = body["choices"][0]["message"]
            content = message.get("content") or ""
            calls = [
                ToolCall(
                    id=str(c["id"]),
                    name=str(c["function"]["name"]),
                    arguments=str(c["function"].get("arguments") or "{}"),
                )
                for c in message.get("tool_calls") or []
            ]
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ProviderError(
                f"malformed chat completion from {self._url}: no choices[0].message", status=502
            ) from exc
        usage = body.get("usage") or {}
        return ProviderReply(
            content=str(content),
            model=str(body.get("model") or request.model),
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            ),
            tool_calls=calls,
        )

    async def stream(self, request: ProviderRequest, on_delta: OnDelta) -> ProviderReply:
        # Without include_usage the stream carries no token counts at all.
        payload = _payload(request) | {
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        reply = _ChunkFolder(request, self._url, self._secret)
        async with open_stream(self._client, self._url, payload, secret=self._secret) as events:
            async for _, data in events:
                if data.strip() == "[DONE]":
                    return reply.result()
                text = reply.add(event_json(data, self._url))
                if text:
                    await on_delta(text)
        raise ProviderError(f"stream from {self._url} ended before [DONE]")

    async def aclose(self) -> None:
        await self._client.aclose()


def _payload(request: ProviderRequest) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": request.model,
        "messages": [to_openai_message(m) for m in request.messages],
        "max_tokens": request.max_tokens,
        "stream": False,
    }
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.tools:
        payload["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
    return payload


class _ChunkFolder:
    """Folds `chat.completion.chunk` objects into the reply `complete` would have returned.

    Tool calls arrive in fragments keyed by `index`: id and name first, then the arguments
    in pieces that only make sense once concatenated.
    """

    def __init__(self, request: ProviderRequest, url: str, secret: str | None) -> None:
        self._request = request
        self._model = request.model
        self._url = url
        self._secret = secret
        self._text: list[str] = []
        self._calls: dict[int, dict[str, str]] = {}
        self._usage: Usage | None = None
        self._pieces = 0  # chunks carrying text or a call fragment: about one token each

    def add(self, chunk: dict[str, Any]) -> str:
        """Takes in one chunk and returns its reply text ("" if it carries none)."""
        if chunk.get("error"):  # a failure after the 200 was sent: the reply is cut short
            detail = describe_error(chunk) or "unknown error"
            raise ProviderError(f"stream from {self._url} failed: {excerpt(detail, self._secret)}")
        if chunk.get("model"):
            self._model = str(chunk["model"])
        try:
            usage = chunk.get("usage")
            if usage:  # only in the last chunk, and only when asked for
                self._usage = Usage(
                    prompt_tokens=int(usage.get("prompt_tokens") or 0),
                    completion_tokens=int(usage.get("completion_tokens") or 0),
                )
            choices = chunk.get("choices") or [{}]  # the usage-only last chunk has none
            delta = choices[0].get("delta") or {}
            text = str(delta.get("content") or "")
            for fragment in delta.get("tool_calls") or []:
                call = self._calls.setdefault(
                    int(fragment.get("index", len(self._calls))),
                    {"id": "", "name": "", "arguments": ""},
                )
                function = fragment.get("function") or {}
                if fragment.get("id"):
                    call["id"] = str(fragment["id"])
                if function.get("name"):
                    call["name"] = str(function["name"])
                call["arguments"] += str(function.get("arguments") or "")
            if text or delta.get("tool_calls"):
                self._pieces += 1
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise ProviderError(f"malformed stream chunk from {self._url}", status=502) from exc
        if text:
            self._text.append(text)
        return text

    def result(self) -> ProviderReply:
        calls = [self._calls[index] for index in sorted(self._calls)]
        if any(not call["id"] or not call["name"] for call in calls):
            raise ProviderError(f"tool call without id or name from {self._url}", status=502)
        return ProviderReply(
            content="".join(self._text),
            model=self._model,
            usage=self._usage or self._estimated_usage(),
            tool_calls=[
                ToolCall(id=c["id"], name=c["name"], arguments=c["arguments"] or "{}")
                for c in calls
            ],
        )

    def _estimated_usage(self) -> Usage:
        """For servers that ignore `stream_options` and send no counts: an estimate, so a
        session's token totals are never silently zero."""
        return Usage(
            prompt_tokens=estimate_prompt_tokens(self._request.messages),
            completion_tokens=self._pieces,
        )


def to_openai_message(message: ContextMessage) -> dict[str, Any]:
    """The internal message form as OpenAI chat completions expects it."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    return out


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    secret: str | None = None,
) -> dict[str, Any]:
    """POST and return the JSON object, or raise a ProviderError that is safe to log.

    `secret` is scrubbed from every message in case a provider echoes the key back.
    """
    try:
        response = await client.post(url, json=payload, headers=headers)
    except httpx.RequestError as exc:
        raise _request_error(exc, url, secret, started=False) from exc
    if not response.is_success:
        raise error_from_response(response, secret=secret)
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderError(f"non-JSON response from {url}", status=502) from exc
    if not isinstance(body, dict):
        raise ProviderError(f"unexpected JSON from {url}: not an object", status=502)
    return body


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    secret: str | None = None,
) -> AsyncIterator[AsyncIterator[tuple[str, str]]]:
    """POST and yield the `(event, data)` server-sent events of the reply.

    Failures before the stream starts raise exactly what `post_json` would; a transport error
    while reading it is a ProviderError with no status: the reply is incomplete, not refused.
    Errors raised by the caller's own code inside the block pass through untouched.
    """
    request = client.build_request("POST", url, json=payload, headers=headers)
    try:
        response = await client.send(request, stream=True)
    except httpx.RequestError as exc:
        raise _request_error(exc, url, secret, started=False) from exc
    try:
        if not response.is_success:
            try:
                await response.aread()
            except httpx.RequestError as exc:
                raise _request_error(exc, url, secret, started=False) from exc
            raise error_from_response(response, secret=secret)
        kind = response.headers.get("content-type", "")
        if not kind.startswith("text/event-stream"):
            raise ProviderError(f"expected an event stream from {url}, got {kind!r}", status=502)
        async with aclosing(_sse_events(response, url, secret)) as events:
            yield events
    finally:
        await response.aclose()


async def _sse_events(
    response: httpx.Response, url: str, secret: str | None
) -> AsyncGenerator[tuple[str, str], None]:
    """Server-sent events by the WHATWG parsing rules, as far as chat APIs use them.

    An event is complete only at its blank line, so one cut off midway is never yielded.
    """
    event = ""
    data: list[str] = []
    lines = response.aiter_lines()
    while True:
        try:
            line = await anext(lines)
        except StopAsyncIteration:
            return
        except httpx.RequestError as exc:
            raise _request_error(exc, url, secret, started=True) from exc
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        # Comments (":" lines, e.g. keep-alives), `id` and `retry` carry nothing we use.


def event_json(data: str, url: str) -> dict[str, Any]:
    """One event's JSON object; anything else means the provider broke the protocol."""
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ProviderError(f"non-JSON event from {url}", status=502) from exc
    if not isinstance(value, dict):
        raise ProviderError(f"unexpected event from {url}: not an object", status=502)
    return value


def error_from_response(response: httpx.Response, *, secret: str | None = None) -> ProviderError:
    """Status, Retry-After and the provider's own explanation; never request headers."""
    message = f"provider returned HTTP {response.status_code}"
    detail = _error_detail(response)
    if detail:
        message += ": " + excerpt(detail, secret)
    return ProviderError(
        message,
        status=response.status_code,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()
    return describe_error(body) or response.text.strip()


def describe_error(body: Any) -> str | None:
    """`error.message` (OpenAI and Anthropic shape), prefixed by `error.type` when present."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        kind, text = error.get("type"), error.get("message")
        if text:
            return f"{kind}: {text}" if kind else str(text)
    if isinstance(error, str):
        return error
    return None


def _request_error(
    exc: httpx.RequestError, url: str, secret: str | None, *, started: bool
) -> ProviderError:
    """No status: the provider never answered, or stopped midway, so a retry may succeed."""
    if isinstance(exc, httpx.TimeoutException):
        where = f"reading the stream from {url}" if started else f"calling {url}"
        return ProviderError(f"timed out {where} ({type(exc).__name__})")
    what = f"stream from {url} broke off" if started else f"could not reach {url}"
    detail = excerpt(str(exc), secret)
    return ProviderError(f"{what}: {type(exc).__name__}: {detail}")


def excerpt(text: str, secret: str | None) -> str:
    """Provider-supplied text made safe to log: the key scrubbed, the length capped."""
    return (text.replace(secret, "[redacted]") if secret else text)[:_EXCERPT_CHARS]
