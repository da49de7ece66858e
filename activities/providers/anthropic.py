"""Anthropic's Messages API, which differs from OpenAI's in where the system prompt goes and
in requiring strictly alternating user/assistant turns that start with the user."""

from typing import Any

import httpx

from activities.providers.base import ProviderError, ProviderReply, ProviderRequest
from activities.providers.openai_compat import post_json
from workflows.messages import ContextMessage, Usage


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
        body = await post_json(self._client, self._url, payload, secret=self._secret)
        blocks = body.get("content")
        if not isinstance(blocks, list):
            raise ProviderError(f"malformed message from {self._url}: no content", status=502)
        text = "".join(
            str(b.get("text", ""))
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "text"
        )
        usage = body.get("usage") or {}
        return ProviderReply(
            content=text,
            model=str(body.get("model") or request.model),
            usage=Usage(
                prompt_tokens=int(usage.get("input_tokens") or 0),
                completion_tokens=int(usage.get("output_tokens") or 0),
            ),
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def to_anthropic_messages(
    messages: list[ContextMessage],
) -> tuple[str | None, list[dict[str, str]]]:
    """Split out the system prompt and make the rest alternate, starting with the user."""
    system = "\n\n".join(m.content for m in messages if m.role == "system") or None
    turns: list[dict[str, str]] = []
    for m in messages:
        if m.role == "system":
            continue
        # A leading assistant message can only be a reply whose question was trimmed from the
        # context window; the API rejects it, and it answers nothing the model can still see.
        if not turns and m.role == "assistant":
            continue
        if turns and turns[-1]["role"] == m.role:
            turns[-1]["content"] += "\n\n" + m.content
        else:
            turns.append({"role": m.role, "content": m.content})
    return system, turns
