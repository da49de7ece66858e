"""The LLM turn activity: reads the context, fits it to the model's window, streams the
provider, and decides retries once, at this boundary (activities/failures.py).
"""

import time
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.caller import CallingRun, calling_run
from activities.context_cache import ContextCache, ToolResultCache
from activities.failures import BAD_MODEL, provider_failure
from activities.heartbeat import heartbeating
from activities.prompt_window import TokenCounts, Window
from activities.providers import ProviderError, ProviderRegistry, ProviderRequest, split_model
from activities.providers.base import OnDelta
from activities.stream_hub import LiveText, StreamHub
from common.ids import parse_workflow_id
from common.settings import Settings
from tools.registry import ToolRegistry
from workflows.context import digest
from workflows.messages import (
    ContextMessage,
    HistoryRequest,
    LLMContextRequest,
    LLMTurnInput,
    LLMTurnResult,
    ToolCall,
    ToolPolicy,
    ToolSpec,
)
from workflows.metrics import model_error_class, record_model_error


class LLMActivities:
    """Activities that need the worker's Temporal client, providers and tools."""

    def __init__(
        self,
        client: Client,
        providers: ProviderRegistry,
        settings: Settings,
        tools: ToolRegistry | None = None,
        results: ToolResultCache | None = None,
        hub: StreamHub | None = None,
    ) -> None:
        self._client = client
        self._hub = hub or StreamHub()
        self._providers = providers
        self._settings = settings
        self._tools = tools or ToolRegistry()
        self._contexts = ContextCache(settings.max_cached_workflows, results)
        self._tokens = TokenCounts()

    @activity.defn(name="generate_reply")
    async def generate_reply(self, turn: LLMTurnInput) -> LLMTurnResult:
        attempt = activity.info().attempt
        run = calling_run()
        context_fields = _log_context(run, turn, attempt)
        activity.logger.info("model call started", extra=context_fields)
        if turn.user_message:
            activity.logger.debug(
                "user message", extra={**context_fields, "text": turn.user_message}
            )
        started = time.monotonic()
        try:
            provider_name, model_name = split_model(turn.model)
        except ValueError as err:
            record_model_error(activity.metric_meter(), turn.model, model_error_class(None, True))
            raise ApplicationError(str(err), type=BAD_MODEL, non_retryable=True) from err
        window = Window(*self._settings.window_for(turn.model))
        read_chars = min(window.read_chars, self._settings.context_max_chars)
        live = self._hub.open((run.workflow_id, turn.turn, turn.step, attempt))
        try:
            async with heartbeating():
                if turn.user_digest is not None:
                    turn = await self._with_user_message(run, turn)
                context = self._contexts.context_for(run, turn, read_chars)
                if context is None:
                    context = await self._read_context(run, turn, read_chars)
                provider = await self._providers.get(provider_name)
                prompt = await self._tokens.fit(turn.model, provider, context, window)
                request = ProviderRequest(
                    model=model_name,
                    messages=prompt.messages,
                    max_tokens=window.output_tokens,
                    tools=self._tool_specs(turn.tools),
                )
                reply = await provider.stream(request, _appender(live))
            live.finish(reply.content)
        except ProviderError as err:
            self._contexts.forget(run)
            error_class = model_error_class(err.status)
            record_model_error(activity.metric_meter(), turn.model, error_class)
            activity.logger.warning(
                "model call failed",
                extra={
                    **context_fields,
                    "error_type": error_class,
                    "duration_ms": _ms_since(started),
                },
            )
            raise provider_failure(err) from err
        finally:
            live.fail()  # a no-op once finished; otherwise readers learn this attempt ended
        self._tokens.learn(turn.model, provider, prompt, reply.usage)
        calls = _unique_ids(reply.tool_calls, turn)
        self._contexts.remember(run, turn, context, reply.content, calls, max_chars=read_chars)
        finished = {
            **context_fields,
            "duration_ms": _ms_since(started),
            "prompt_tokens": reply.usage.prompt_tokens,
            "completion_tokens": reply.usage.completion_tokens,
        }
        activity.logger.info("model call finished", extra=finished)
        activity.logger.debug("model reply", extra={**finished, "text": reply.content})
        return LLMTurnResult(
            content=reply.content,
            model=turn.model,
            usage=reply.usage,
            context_from_seq=prompt.from_seq,
            dropped_tokens=prompt.dropped_tokens,
            prompt_budget=window.prompt_budget,
            tool_calls=calls,
            tool_policies={call.name: self._policy(call.name) for call in calls},
            attempt=attempt,
        )

    def _tool_specs(self, names: list[str]) -> list[ToolSpec]:
        """The session's tools this worker has (a name it lacks is simply not offered)."""
        return [item.definition() for name in names if (item := self._tools.get(name)) is not None]

    def _policy(self, name: str) -> ToolPolicy:
        item = self._tools.get(name)
        return item.policy() if item is not None else ToolPolicy()

    async def _with_user_message(self, run: CallingRun, turn: LLMTurnInput) -> LLMTurnInput:
        """A long user message comes by reference (history holds it once, in the send)."""
        from workflows.session import ChatSessionWorkflow

        handle = self._client.get_workflow_handle(run.workflow_id, run_id=run.run_id)
        page = await handle.query(
            ChatSessionWorkflow.history, HistoryRequest(after=turn.upto_seq - 1, limit=1)
        )
        message = page.messages[0] if page.messages else None
        if message is None or message.seq != turn.upto_seq:
            raise ApplicationError(
                f"message {turn.upto_seq} is not in run {run.run_id}", type="ContextMissing"
            )  # retryable: a worker that answers queries may come back
        if digest(message.content) != turn.user_digest:
            raise ApplicationError(
                f"message {turn.upto_seq} does not match its digest",
                type="ContextMissing",
                non_retryable=True,
            )
        return turn.model_copy(update={"user_message": message.content, "user_digest": None})

    async def _read_context(
        self, run: CallingRun, turn: LLMTurnInput, max_chars: int
    ) -> list[ContextMessage]:
        # Imported here: the workflow module is only needed for its query's name and types.
        from workflows.session import ChatSessionWorkflow

        handle = self._client.get_workflow_handle(run.workflow_id, run_id=run.run_id)
        return await handle.query(
            ChatSessionWorkflow.llm_context,
            LLMContextRequest(upto_seq=turn.upto_seq, max_chars=max_chars),
        )


def _log_context(run: CallingRun, turn: LLMTurnInput, attempt: int) -> dict[str, Any]:
    """What every log line of a model call carries (never the conversation's text)."""
    parsed = parse_workflow_id(run.workflow_id)
    return {
        "session_id": parsed[1] if parsed else None,
        "user": parsed[0] if parsed else None,
        "turn": turn.turn,
        "step": turn.step,
        "attempt": attempt,
        "model": turn.model,
    }


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _appender(live: LiveText) -> OnDelta:
    async def on_delta(text: str) -> None:
        live.append(text)

    return on_delta


def _unique_ids(calls: list[ToolCall], turn: LLMTurnInput) -> list[ToolCall]:
    """Every call gets an id unique within the turn: approvals and results are keyed on it."""
    seen: set[str] = set()
    unique = []
    for index, call in enumerate(calls):
        call_id = call.id or f"call-{turn.turn}-{turn.step}-{index}"
        while call_id in seen:
            call_id = f"{call_id}-{index}"
        seen.add(call_id)
        unique.append(call if call_id == call.id else call.model_copy(update={"id": call_id}))
    return unique
