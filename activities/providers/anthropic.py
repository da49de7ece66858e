"""Anthropic's Messages API, which differs from OpenAI's in where the system prompt goes and
in requiring strictly alternating user/assistant turns that start with the user."""

import json
from typing import Any

import httpx

from activities.providers.base import ProviderError, ProviderReply, ProviderRequest
from activities.providers.openai_compat import post_json
from workflows.messages import ContextMessage, ToolCall, Usage


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

    async def aclose(self) -> None:
        await self._client.aclose()


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
