"""A deterministic provider for tests and benchmarks; never a stand-in for a real model.

It answers `echo: <last user message>`. Directives in the last user message script its
behaviour: `[[delay=2.5]]` sleeps (heartbeating, like a slow model), `[[fail=503]]` fails
with that HTTP status, `[[fail_once=503]]` fails only on the first attempt of the turn.
"""

import asyncio
import re

from temporalio import activity

from activities.providers.base import ProviderError, ProviderReply, ProviderRequest
from workflows.messages import Usage

_DIRECTIVE = re.compile(r"\[\[(\w+)=([\w.]+)\]\]")


class ScriptedProvider:
    async def complete(self, request: ProviderRequest) -> ProviderReply:
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        directives = dict(_DIRECTIVE.findall(last_user))
        if "delay" in directives:
            await asyncio.sleep(float(directives["delay"]))
        if "fail" in directives:
            raise ProviderError("scripted failure", status=int(directives["fail"]))
        if "fail_once" in directives and _attempt() == 1:
            raise ProviderError("scripted failure", status=int(directives["fail_once"]))
        content = "echo: " + _DIRECTIVE.sub("", last_user).strip()
        prompt_words = sum(len(m.content.split()) for m in request.messages)
        return ProviderReply(
            content=content,
            model=request.model,
            usage=Usage(prompt_tokens=prompt_words, completion_tokens=len(content.split())),
        )

    async def aclose(self) -> None:
        return None


def _attempt() -> int:
    return activity.info().attempt if activity.in_activity() else 1
