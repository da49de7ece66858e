"""The LLM turn activity: reads the context by query, calls the provider, decides retries.

Retry decisions are made here, once: 408/409/429/5xx and connection failures are retryable
(Retry-After becomes the next retry delay), every other failure is not.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.context_cache import ContextCache
from activities.providers import ProviderError, ProviderRegistry, ProviderRequest, split_model
from common.settings import Settings
from workflows.messages import ContextMessage, LLMContextRequest, LLMTurnInput, LLMTurnResult

HEARTBEAT_EVERY_SECONDS = 2.0

# ApplicationError types, mapped to HTTP statuses by the gateway (api/errors.py).
PROVIDER_ERROR = "ProviderError"
BAD_MODEL = "BadModel"


class LLMActivities:
    """Activities that need the worker's Temporal client and provider registry."""

    def __init__(self, client: Client, providers: ProviderRegistry, settings: Settings) -> None:
        self._client = client
        self._providers = providers
        self._settings = settings
        self._contexts = ContextCache(settings.max_cached_workflows, settings.context_max_chars)

    @activity.defn(name="generate_reply")
    async def generate_reply(self, turn: LLMTurnInput) -> LLMTurnResult:
        try:
            provider_name, model_name = split_model(turn.model)
        except ValueError as err:
            raise ApplicationError(str(err), type=BAD_MODEL, non_retryable=True) from err
        try:
            async with _heartbeating():
                context = self._contexts.context_for(turn) or await self._read_context(turn)
                request = ProviderRequest(
                    model=model_name, messages=context, max_tokens=self._settings.max_output_tokens
                )
                provider = await self._providers.get(provider_name)
                reply = await provider.complete(request)
        except ProviderError as err:
            self._contexts.forget(turn)
            raise ApplicationError(
                err.message,
                type=PROVIDER_ERROR,
                non_retryable=not err.retryable,
                next_retry_delay=timedelta(seconds=err.retry_after) if err.retry_after else None,
            ) from err
        self._contexts.remember(turn, context, reply.content)
        return LLMTurnResult(content=reply.content, model=turn.model, usage=reply.usage)

    async def _read_context(self, turn: LLMTurnInput) -> list[ContextMessage]:
        # Imported here: the workflow module is only needed for its query's name and types.
        from workflows.session import ChatSessionWorkflow

        handle = self._client.get_workflow_handle(turn.workflow_id, run_id=turn.run_id)
        return await handle.query(
            ChatSessionWorkflow.llm_context,
            LLMContextRequest(upto_seq=turn.upto_seq, max_chars=self._settings.context_max_chars),
        )


@asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeat while a generation runs, so a dead worker's turn moves on within seconds."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY_SECONDS)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
