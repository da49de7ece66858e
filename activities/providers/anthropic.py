"""Anthropic's Messages API, which differs from OpenAI's in where the system prompt goes and
in requiring strictly alternating user/assistant turns that start with the user."""

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from activities.providers.base import OnDelta, ProviderError, ProviderReply, ProviderRequest
from activities.providers.openai_compat import (
    describe_error,
    event_json,
    excerpt,
    open_stream,
    post_json,
)
from workflows.messages import ContextMessage, ToolCall, Usage

# HTTP statuses of Anthropic's documented error types, so an `error` event that arrives
# mid-stream is retried (or not) exactly as the same error as an HTTP response would be.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicProvider:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
        api_version: str = "2023-06-01",
    ) -> None:
        self._url = base_url.rstrip("/") + "/v1/messages"
        self._secret = api_key
        self._client = httpx.AsyncClient(
            headers={"x-api-key": api_key, "anthropic-version": api_version},
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        payload = _payload(request)
        body = await post_json(self._client, self._url, payload, secret=self._secret)
        blocks = body.get("content")
        if not isinstance(blocks, list):
            raise ProviderError(f"malformed message from {self._url}: no content", status=502)
        text = "".join(
            str(b.get("text", ""))
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "text"
        )
        calls = [
            ToolCall(id=str(b["id"]), name=str(b["name"]), arguments=json.dumps(b.get("input", {})))
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "tool_use"
        ]
        usage = body.get("usage") or {}
        return ProviderReply(
            content=text,
            model=str(body.get("model") or request.model),
            usage=Usage(
                prompt_tokens=int(usage.get("input_tokens") or 0),
                completion_tokens=int(usage.get("output_tokens") or 0),
            ),
            tool_calls=calls,
        )

    async def stream(self, request: ProviderRequest, on_delta: OnDelta) -> ProviderReply:
        payload = _payload(request) | {"stream": True}
        message = _EventFolder(request.model, self._url, self._secret)
        async with open_stream(self._client, self._url, payload, secret=self._secret) as events:
            async for _, data in events:
                text = message.add(event_json(data, self._url))
                if text:
                    await on_delta(text)
                if message.stopped:
                    return message.result()
        raise ProviderError(f"stream from {self._url} ended before message_stop")

    async def aclose(self) -> None:
        await self._client.aclose()


def _payload(request: ProviderRequest) -> dict[str, Any]:
    system, turns = to_anthropic_messages(request.messages)
    if not turns:
        raise ProviderError("no user message to answer", status=400)
    payload: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": turns,
    }
    if system:
        payload["system"] = system
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.tools:
        payload["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
    return payload


@dataclass
class _Block:
    kind: str
    id: str = ""
    name: str = ""
    input: Any = None
    partial_json: list[str] = field(default_factory=list)


class _EventFolder:
    """Folds Messages API stream events into the reply `complete` would have returned.

    A tool's input arrives as pieces of JSON that only parse once its block is complete.
    """

    def __init__(self, model: str, url: str, secret: str) -> None:
        self._model = model
        self._url = url
        self._secret = secret
        self._text: list[str] = []
        self._blocks: dict[int, _Block] = {}
        self._input_tokens = 0
        self._output_tokens = 0
        self.stopped = False

    def add(self, event: dict[str, Any]) -> str:
        """Takes in one event and returns its reply text ("" if it carries none)."""
        kind = event.get("type")
        try:
            if kind == "message_start":
                message = event["message"]
                self._model = str(message.get("model") or self._model)
                self._count(message.get("usage"))
            elif kind == "content_block_start":
                block = event["content_block"]
                self._blocks[int(event["index"])] = _Block(
                    kind=str(block["type"]),
                    id=str(block.get("id") or ""),
                    name=str(block.get("name") or ""),
                    input=block.get("input"),
                )
                return self._emit(str(block.get("text") or ""))
            elif kind == "content_block_delta":
                delta = event["delta"]
                if delta.get("type") == "text_delta":
                    return self._emit(str(delta["text"]))
                if delta.get("type") == "input_json_delta":
                    self._blocks[int(event["index"])].partial_json.append(
                        str(delta["partial_json"])
                    )
            elif kind == "message_delta":
                self._count(event.get("usage"))
            elif kind == "message_stop":
                self.stopped = True
            elif kind == "error":
                self._fail(event)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProviderError(f"malformed {kind} event from {self._url}", status=502) from exc
        # content_block_stop, ping, and deltas of other block kinds (thinking) add no text.
        return ""

    def result(self) -> ProviderReply:
        calls = [
            ToolCall(id=block.id, name=block.name, arguments=self._arguments(block))
            for _, block in sorted(self._blocks.items())
            if block.kind == "tool_use"
        ]
        return ProviderReply(
            content="".join(self._text),
            model=self._model,
            usage=Usage(prompt_tokens=self._input_tokens, completion_tokens=self._output_tokens),
            tool_calls=calls,
        )

    def _emit(self, text: str) -> str:
        if text:
            self._text.append(text)
        return text

    def _count(self, usage: Any) -> None:
        """Usage in `message_delta` is cumulative, so later counts replace earlier ones."""
        if not isinstance(usage, dict):
            return
        if usage.get("input_tokens") is not None:
            self._input_tokens = int(usage["input_tokens"])
        if usage.get("output_tokens") is not None:
            self._output_tokens = int(usage["output_tokens"])

    def _arguments(self, block: _Block) -> str:
        """The same JSON text `complete` produces from the finished `input` object."""
        raw = "".join(block.partial_json)
        try:
            value = json.loads(raw) if raw else (block.input or {})
        except json.JSONDecodeError as exc:
            raise ProviderError(
                f"tool input for {block.name!r} from {self._url} is not JSON", status=502
            ) from exc
        return json.dumps(value)

    def _fail(self, event: dict[str, Any]) -> None:
        error = event.get("error")
        kind = error.get("type") if isinstance(error, dict) else None
        detail = excerpt(describe_error(event) or "unknown error", self._secret)
        raise ProviderError(
            f"stream from {self._url} failed: {detail}", status=_ERROR_STATUS.get(str(kind))
        )


def to_anthropic_messages(
    messages: list[ContextMessage],
) -> tuple[str | None, list[dict[str, Any]]]:
    """Split out the system prompt and make the rest alternate, starting with the user.

    Tool calls become `tool_use` blocks on the assistant turn; tool results become
    `tool_result` blocks on the following user turn, as the Messages API requires. A turn
    that holds only text keeps plain string content.
    """
    system = "\n\n".join(m.content for m in messages if m.role == "system") or None
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "user" if m.role in ("user", "tool") else "assistant"
        # A leading assistant or tool message can only belong to a question trimmed from the
        # context window; the API rejects it, and it answers nothing the model can still see.
        if not turns and role == "assistant":
            continue
        if not turns and m.role == "tool":
            continue
        blocks = _blocks(m)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if all(b["type"] == "text" for b in turn["content"]):
            turn["content"] = "\n\n".join(b["text"] for b in turn["content"])
    return system, turns


def _blocks(message: ContextMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": message.content,
                "is_error": message.is_error,
            }
        ]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        try:
            arguments = json.loads(call.arguments or "{}")
        except json.JSONDecodeError:
            arguments = {"_unparsed": call.arguments}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks
