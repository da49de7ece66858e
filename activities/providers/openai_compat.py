"""Any server speaking the OpenAI chat-completions API: OpenAI itself, vLLM, llama.cpp, Ollama.

Also home to the HTTP error mapping the Anthropic provider shares, so both describe failures
the same way and the activity can decide retries from `status` alone.
"""

from typing import Any

import httpx

from activities.providers.base import (
    ProviderError,
    ProviderReply,
    ProviderRequest,
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

    async def aclose(self) -> None:
        await self._client.aclose()


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
    except httpx.TimeoutException as exc:
        raise ProviderError(f"timed out calling {url} ({type(exc).__name__})") from exc
    except httpx.RequestError as exc:
        detail = _redact(str(exc), secret)[:_EXCERPT_CHARS]
        raise ProviderError(f"could not reach {url}: {type(exc).__name__}: {detail}") from exc
    if not response.is_success:
        raise error_from_response(response, secret=secret)
    try:
        body = response.json()
    except ValueError as exc:
        raise ProviderError(f"non-JSON response from {url}", status=502) from exc
    if not isinstance(body, dict):
        raise ProviderError(f"unexpected JSON from {url}: not an object", status=502)
    return body


def error_from_response(response: httpx.Response, *, secret: str | None = None) -> ProviderError:
    """Status, Retry-After and the provider's own explanation; never request headers."""
    message = f"provider returned HTTP {response.status_code}"
    detail = _error_detail(response)
    if detail:
        message += ": " + _redact(detail, secret)[:_EXCERPT_CHARS]
    return ProviderError(
        message,
        status=response.status_code,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def _error_detail(response: httpx.Response) -> str:
    """`error.message` (OpenAI and Anthropic shape), prefixed by `error.type` when present."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        kind, text = error.get("type"), error.get("message")
        if text:
            return f"{kind}: {text}" if kind else str(text)
    if isinstance(error, str):
        return error
    return response.text.strip()


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "[redacted]") if secret else text
