"""Compaction: a model summarises the part of a conversation that no longer fits the prompt.

The workflow asks for it between turns; the messages come by query (like a turn's context),
so history records only the request and the summary. The summary is bounded, and the
messages themselves stay in history: only prompts use the summary instead of them. When the
summarising model's window holds only the older part of the messages asked for, it
summarises that part and says where it stopped; the next compaction takes the rest.
"""

from collections.abc import Callable

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.caller import calling_run
from activities.failures import BAD_MODEL, provider_failure
from activities.heartbeat import heartbeating
from activities.prompt_window import (
    MESSAGE_OVERHEAD_TOKENS,
    CountsTokens,
    counted,
    estimate_tokens,
)
from activities.providers import ProviderError, ProviderRegistry, ProviderRequest, split_model
from activities.providers.base import CHARS_PER_TOKEN
from common.settings import Settings
from workflows.messages import (
    CompactionRequest,
    CompactionSource,
    ContextMessage,
    SummaryResult,
)
from workflows.metrics import model_error_class, record_model_error

SUMMARY_MAX_TOKENS = 400
SUMMARY_MAX_CHARS = 4 * SUMMARY_MAX_TOKENS  # a model that ignores max_tokens is cut here
INSTRUCTIONS = (
    "You maintain a running summary of a chat between a user and an assistant. Rewrite the "
    "summary so it also covers the new messages. Keep every fact the user stated (names, "
    "numbers, dates, preferences, decisions) and what remains open. Write plain prose, at "
    f"most {SUMMARY_MAX_TOKENS // 2} words, and nothing but the summary."
)


def fit_source(
    source: CompactionSource, budget: int, count: Callable[[str], int]
) -> CompactionSource:
    """The oldest of the source's messages whose transcript fits `budget` tokens (at least
    one, cut short if it alone is too long)."""
    used = count(transcript_text(source.model_copy(update={"messages": []})))
    kept: list[ContextMessage] = []
    for message in source.messages:
        size = count(_line(message)) + MESSAGE_OVERHEAD_TOKENS
        if used + size > budget:
            if not kept:
                room = max(budget - used, 1) * CHARS_PER_TOKEN // 2
                kept.append(message.model_copy(update={"content": message.content[:room] + " …"}))
            break
        kept.append(message)
        used += size
    return source.model_copy(update={"messages": kept})


def transcript_text(source: CompactionSource) -> str:
    """The previous summary and the new messages, as one text for the summarising model."""
    parts = [f"Summary so far:\n{source.summary}"] if source.summary else []
    parts.append("New messages:")
    parts.extend(_line(message) for message in source.messages)
    return "\n\n".join(parts)


def _line(message: ContextMessage) -> str:
    if message.role == "tool":
        return f"Tool result: {message.content}"
    calls = ", ".join(f"{c.name}({c.arguments})" for c in message.tool_calls)
    text = f"{message.role.capitalize()}: {message.content}"
    return f"{text}\n(asked for tools: {calls})" if calls else text


class CompactionActivities:
    def __init__(self, client: Client, providers: ProviderRegistry, settings: Settings) -> None:
        self._client = client
        self._providers = providers
        self._settings = settings

    @activity.defn(name="summarize_history")
    async def summarize_history(self, req: CompactionRequest) -> SummaryResult:
        try:
            provider_name, model_name = split_model(req.model)
        except ValueError as err:
            record_model_error(activity.metric_meter(), req.model, model_error_class(None, True))
            raise ApplicationError(str(err), type=BAD_MODEL, non_retryable=True) from err
        try:
            async with heartbeating():
                provider = await self._providers.get(provider_name)
                source = await self._fitted(await self._source(req), req.model, provider)
                reply = await provider.complete(
                    ProviderRequest(
                        model=model_name,
                        messages=[
                            ContextMessage(role="system", content=INSTRUCTIONS),
                            ContextMessage(role="user", content=transcript_text(source)),
                        ],
                        max_tokens=SUMMARY_MAX_TOKENS,
                    )
                )
        except ProviderError as err:
            record_model_error(activity.metric_meter(), req.model, model_error_class(err.status))
            raise provider_failure(err) from err
        covered = next((m.seq for m in reversed(source.messages) if m.seq is not None), None)
        return SummaryResult(
            text=reply.content.strip()[:SUMMARY_MAX_CHARS],
            model=req.model,
            usage=reply.usage,
            upto_seq=covered if covered is not None and covered < req.upto else None,
        )

    async def _fitted(
        self, source: CompactionSource, model: str, provider: object
    ) -> CompactionSource:
        context, _ = self._settings.window_for(model)
        budget = context - SUMMARY_MAX_TOKENS - estimate_tokens(INSTRUCTIONS)
        if isinstance(provider, CountsTokens):
            return await counted(provider, fit_source, source, budget, provider.count_tokens)
        return fit_source(source, budget, estimate_tokens)

    async def _source(self, req: CompactionRequest) -> CompactionSource:
        from workflows.session import ChatSessionWorkflow

        run = calling_run()
        handle = self._client.get_workflow_handle(run.workflow_id, run_id=run.run_id)
        return await handle.query(ChatSessionWorkflow.compaction_source, req)
