"""Recent transcripts kept in the worker's memory, so most model calls need no query.

An entry for a run is used only if it ends exactly at the message before this turn's user
message (same sequence number, same content digest): anything else (another worker ran the
last turn, a retry produced a different reply, the worker restarted, a new run) misses, and
the activity reads the context by query. A hit and a query give the same messages because
both trim with `workflows.context.fit_context`, by the characters the model's window could
use; the activity then fits either to the model's tokens.

After a tool round, the model's call request is in the entry and the results are in the
`ToolResultCache` the tool activity filled on this worker; both must match the digests the
workflow sends, or the call misses and queries.
"""

from collections import OrderedDict
from dataclasses import dataclass

from activities.caller import CallingRun
from workflows.context import digest, fit_context, split_head
from workflows.messages import ContextMessage, LLMTurnInput, ToolCall, ToolOutcome


class ToolResultCache:
    """Tool results this worker produced, by (workflow id, turn, call id)."""

    def __init__(self, max_entries: int) -> None:
        self._results: OrderedDict[tuple[str, int, str], ContextMessage] = OrderedDict()
        self._max_entries = max_entries

    def put(self, workflow_id: str, turn: int, call_id: str, outcome: ToolOutcome) -> None:
        key = (workflow_id, turn, call_id)
        self._results[key] = ContextMessage(
            role="tool", content=outcome.content, tool_call_id=call_id, is_error=outcome.is_error
        )
        self._results.move_to_end(key)
        while len(self._results) > self._max_entries:
            self._results.popitem(last=False)

    def get(self, workflow_id: str, turn: int, call_id: str) -> ContextMessage | None:
        return self._results.get((workflow_id, turn, call_id))


@dataclass(frozen=True)
class _Entry:
    last_seq: int
    last_digest: str
    head: list[ContextMessage]  # the leading system messages: prompt and running summary
    messages: list[ContextMessage]
    summary_upto: int = 0


class ContextCache:
    def __init__(self, max_sessions: int, results: ToolResultCache | None = None) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max_sessions = max_sessions
        self._results = results or ToolResultCache(max_sessions)

    def context_for(
        self, run: CallingRun, turn: LLMTurnInput, max_chars: int
    ) -> list[ContextMessage] | None:
        """The context the `llm_context` query of `run` would answer with `max_chars`, or
        None."""
        if turn.step > 1:
            return self._after_tools(run, turn, max_chars)
        user = ContextMessage(role="user", content=turn.user_message, seq=turn.upto_seq)
        if turn.upto_seq == 1:  # a session's first message: everything is in the input
            if turn.system_prompt:
                return [ContextMessage(role="system", content=turn.system_prompt), user]
            return [user]
        entry = self._entries.get(run.run_id)
        if (
            entry is None
            or entry.summary_upto != turn.summary_upto
            or entry.last_seq != turn.upto_seq - 1
            or entry.last_digest != turn.previous_digest
        ):
            return None
        self._entries.move_to_end(run.run_id)
        messages = fit_context([*entry.messages, user], max_chars)
        return [*entry.head, *messages]

    def _after_tools(
        self, run: CallingRun, turn: LLMTurnInput, max_chars: int
    ) -> list[ContextMessage] | None:
        entry = self._entries.get(run.run_id)
        calls = entry.messages[-1].tool_calls if entry and entry.messages else []
        if (
            entry is None
            or entry.summary_upto != turn.summary_upto
            or not calls
            or len(calls) != len(turn.result_digests)
            or entry.last_seq != turn.upto_seq - len(calls)
        ):
            return None
        results = []
        for index, (call, expected) in enumerate(zip(calls, turn.result_digests, strict=True)):
            result = self._results.get(run.workflow_id, turn.turn, call.id)
            if result is None or digest(result.content) != expected:
                return None
            results.append(result.model_copy(update={"seq": entry.last_seq + 1 + index}))
        self._entries.move_to_end(run.run_id)
        messages = fit_context([*entry.messages, *results], max_chars)
        return [*entry.head, *messages]

    def remember(
        self,
        run: CallingRun,
        turn: LLMTurnInput,
        context: list[ContextMessage],
        reply: str,
        calls: list[ToolCall] | None = None,
        *,
        max_chars: int,
    ) -> None:
        """Record the context a call read (before token fitting) plus its reply, which
        becomes message upto_seq + 1 (with the tool calls it asked for, if any)."""
        head, body = split_head(context)
        answer = ContextMessage(
            role="assistant", content=reply, tool_calls=calls or [], seq=turn.upto_seq + 1
        )
        messages = fit_context([*body, answer], max_chars)
        self._entries[run.run_id] = _Entry(
            turn.upto_seq + 1, digest(reply), head, messages, turn.summary_upto
        )
        self._entries.move_to_end(run.run_id)
        while len(self._entries) > self._max_sessions:
            self._entries.popitem(last=False)

    def forget(self, run: CallingRun) -> None:
        self._entries.pop(run.run_id, None)
