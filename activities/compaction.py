"""Compaction: a model summarises the part of a conversation that no longer fits the prompt.

The workflow asks for it between turns; the messages come by query (like a turn's context),
so history records only the request and the summary. The summary is bounded, and the
messages themselves stay in history: only prompts use the summary instead of them.
"""

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.failures import BAD_MODEL, provider_failure
from activities.heartbeat import heartbeating
from activities.providers import ProviderError, ProviderRegistry, ProviderRequest, split_model
from workflows.messages import (
    CompactionRequest,
    CompactionSource,
    ContextMessage,
    SummaryResult,
)

SUMMARY_MAX_TOKENS = 400
SUMMARY_MAX_CHARS = 4 * SUMMARY_MAX_TOKENS  # a model that ignores max_tokens is cut here
INSTRUCTIONS = (
    "You maintain a running summary of a chat between a user and an assistant. Rewrite the "
    "summary so it also covers the new messages. Keep every fact the user stated (names, "
    "numbers, dates, preferences, decisions) and what remains open. Write plain prose, at "
    f"most {SUMMARY_MAX_TOKENS // 2} words, and nothing but the summary."
)


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
    def __init__(self, client: Client, providers: ProviderRegistry) -> None:
        self._client = client
        self._providers = providers

    @activity.defn(name="summarize_history")
    async def summarize_history(self, req: CompactionRequest) -> SummaryResult:
        try:
            provider_name, model_name = split_model(req.model)
        except ValueError as err:
            raise ApplicationError(str(err), type=BAD_MODEL, non_retryable=True) from err
        try:
            async with heartbeating():
                source = await self._source(req)
                provider = await self._providers.get(provider_name)
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
            raise provider_failure(err) from err
        return SummaryResult(
            text=reply.content.strip()[:SUMMARY_MAX_CHARS], model=req.model, usage=reply.usage
        )

    async def _source(self, req: CompactionRequest) -> CompactionSource:
        from workflows.session import ChatSessionWorkflow

        handle = self._client.get_workflow_handle(req.workflow_id, run_id=req.run_id)
        return await handle.query(ChatSessionWorkflow.compaction_source, req)
