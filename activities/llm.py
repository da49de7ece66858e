"""The LLM turn activity: reads the context by query, streams the provider, decides retries.

Retry decisions are made here, once: 408/409/429/5xx and connection failures are retryable
(Retry-After becomes the next retry delay), every other failure is not.
"""

from datetime import timedelta

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.context_cache import ContextCache, ToolResultCache
from activities.heartbeat import heartbeating
from activities.providers import ProviderError, ProviderRegistry, ProviderRequest, split_model
from activities.providers.base import OnDelta
from activities.stream_hub import LiveText, StreamHub
from common.settings import Settings
from tools.registry import ToolRegistry
from workflows.messages import (
    ContextMessage,
    LLMContextRequest,
    LLMTurnInput,
    LLMTurnResult,
    ToolCall,
    ToolPolicy,
    ToolSpec,
)

# ApplicationError types, mapped to HTTP statuses by the gateway (api/errors.py).
PROVIDER_ERROR = "ProviderError"
BAD_MODEL = "BadModel"


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
        self._contexts = ContextCache(
            settings.max_cached_workflows, settings.context_max_chars, results
        )

    @activity.defn(name="generate_reply")
    async def generate_reply(self, turn: LLMTurnInput) -> LLMTurnResult:
        try:
            provider_name, model_name = split_model(turn.model)
        except ValueError as err:
            raise ApplicationError(str(err), type=BAD_MODEL, non_retryable=True) from err
        attempt = activity.info().attempt
        live = self._hub.open((turn.workflow_id, turn.turn, turn.step, attempt))
        try:
            async with heartbeating():
                context = self._contexts.context_for(turn) or await self._read_context(turn)
                request = ProviderRequest(
                    model=model_name,
                    messages=context,
                    max_tokens=self._settings.max_output_tokens,
                    tools=self._tool_specs(turn.tools),
                )
                provider = await self._providers.get(provider_name)
                reply = await provider.stream(request, _appender(live))
            live.finish(reply.content)
        except ProviderError as err:
            self._contexts.forget(turn)
            raise ApplicationError(
                err.message,
                type=PROVIDER_ERROR,
                non_retryable=not err.retryable,
                next_retry_delay=timedelta(seconds=err.retry_after) if err.retry_after else None,
            ) from err
        finally:
            live.fail()  # a no-op once finished; otherwise readers learn this attempt ended
        calls = _unique_ids(reply.tool_calls, turn)
        self._contexts.remember(turn, context, reply.content, calls)
        return LLMTurnResult(
            content=reply.content,
            model=turn.model,
            usage=reply.usage,
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

    async def _read_context(self, turn: LLMTurnInput) -> list[ContextMessage]:
        # Imported here: the workflow module is only needed for its query's name and types.
        from workflows.session import ChatSessionWorkflow

        handle = self._client.get_workflow_handle(turn.workflow_id, run_id=turn.run_id)
        return await handle.query(
            ChatSessionWorkflow.llm_context,
            LLMContextRequest(upto_seq=turn.upto_seq, max_chars=self._settings.context_max_chars),
        )


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
