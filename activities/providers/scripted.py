"""A deterministic provider for tests and benchmarks; never a stand-in for a real model.

It answers `echo: <last user message>`. Directives in the last user message script its
behaviour: `[[delay=2.5]]` sleeps (heartbeating, like a slow model), `[[fail=503]]` fails
with that HTTP status, `[[fail_once=503]]` fails only on the first attempt of the turn.
`stream` sends the reply a word at a time; `[[tok_delay=0.05]]` waits that many seconds
before each word, so a test can watch a reply arrive.

`<<tools:[[{"name": "calculate", "arguments": {"expression": "2+2"}}], [...]]>>` scripts tool
calls: one list of calls per model step (calls in one step are asked for at once). Once the
script is used up it answers `echo: <message> [tools: <result> | <result> ...]`, quoting the
results of this turn's last tool step, so a test sees what the tools returned. `arguments` may
be a string, sent as is (to script invalid JSON). `tool_script` writes such a directive.
"""

import asyncio
import json
import re
import uuid
from typing import Any

from temporalio import activity

from activities.providers.base import OnDelta, ProviderError, ProviderReply, ProviderRequest
from workflows.messages import ContextMessage, ToolCall, Usage

_DIRECTIVE = re.compile(r"\[\[(\w+)=([\w.]+)\]\]")
_TOOL_SCRIPT = re.compile(r"<<tools:(.*?)>>", re.DOTALL)
_WORD = re.compile(r"\s*\S+\s*|\s+")  # each word with the spaces around it: pieces rejoin exactly


class ScriptedProvider:
    tokenizer_blocks = False

    def count_tokens(self, text: str) -> int:
        """A word is a token: the same count its usage numbers report."""
        return len(text.split())

    async def complete(self, request: ProviderRequest) -> ProviderReply:
        turn = _current_turn(request.messages)
        last_user = turn[0].content if turn and turn[0].role == "user" else ""
        directives = dict(_DIRECTIVE.findall(last_user))
        if "delay" in directives:
            await asyncio.sleep(float(directives["delay"]))
        if "fail" in directives:
            raise ProviderError("scripted failure", status=int(directives["fail"]))
        if "fail_once" in directives and _attempt() == 1:
            raise ProviderError("scripted failure", status=int(directives["fail_once"]))
        script = _tool_script(last_user)
        steps_done = sum(1 for m in turn if m.role == "assistant" and m.tool_calls)
        prompt_words = sum(len(m.content.split()) for m in request.messages)
        if steps_done < len(script):
            calls = [_call(spec) for spec in script[steps_done]]
            return ProviderReply(
                content="",
                model=request.model,
                usage=Usage(prompt_tokens=prompt_words, completion_tokens=len(calls)),
                tool_calls=calls,
            )
        text = _TOOL_SCRIPT.sub("", _DIRECTIVE.sub("", last_user)).strip()
        content = "echo: " + text
        results = _last_results(turn)
        if results:
            content += " [tools: " + " | ".join(results) + "]"
        return ProviderReply(
            content=content,
            model=request.model,
            usage=Usage(prompt_tokens=prompt_words, completion_tokens=len(content.split())),
        )

    async def stream(self, request: ProviderRequest, on_delta: OnDelta) -> ProviderReply:
        reply = await self.complete(request)  # a tool-call step has no text, so streams none
        tok_delay = float(_directives(request).get("tok_delay", 0))
        for piece in _WORD.findall(reply.content):
            if tok_delay:
                await asyncio.sleep(tok_delay)
            await on_delta(piece)
        return reply

    async def aclose(self) -> None:
        return None


def _directives(request: ProviderRequest) -> dict[str, str]:
    turn = _current_turn(request.messages)
    return dict(_DIRECTIVE.findall(turn[0].content if turn else ""))


def tool_script(*steps: list[tuple[str, Any]]) -> str:
    """The `<<tools:...>>` directive: one list of (tool name, arguments) calls per model step."""
    plan = [[{"name": name, "arguments": args} for name, args in step] for step in steps]
    return f"<<tools:{json.dumps(plan)}>>"


def _current_turn(messages: list[ContextMessage]) -> list[ContextMessage]:
    """The last user message and everything after it (this turn's tool steps)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return messages[index:]
    return []


def _tool_script(text: str) -> list[list[dict[str, Any]]]:
    match = _TOOL_SCRIPT.search(text)
    if match is None:
        return []
    try:
        script = json.loads(match.group(1))
    except json.JSONDecodeError as exc:
        raise ProviderError(f"scripted: bad tool script ({exc})", status=400) from exc
    if not isinstance(script, list) or not all(isinstance(step, list) for step in script):
        raise ProviderError("scripted: the tool script must be a list of steps", status=400)
    return script


def _call(spec: dict[str, Any]) -> ToolCall:
    arguments = spec.get("arguments", {})
    return ToolCall(
        id=f"call-{uuid.uuid4().hex[:12]}",
        name=str(spec["name"]),
        arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
    )


def _last_results(turn: list[ContextMessage]) -> list[str]:
    results: list[str] = []
    for message in reversed(turn):
        if message.role != "tool":
            break
        results.insert(0, ("error: " if message.is_error else "") + message.content)
    return results


def _attempt() -> int:
    return activity.info().attempt if activity.in_activity() else 1
