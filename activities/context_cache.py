"""Recent transcripts kept in the worker's memory, so most turns need no query.

An entry for a run is used only if it ends exactly at the message before this turn's user
message (same sequence number, same content digest): anything else (another worker ran the
last turn, a retry produced a different reply, the worker restarted, a new run) misses, and
the activity reads the context by query. A hit and a query give the same messages because
both trim with `workflows.context.fit_context`.
"""

from collections import OrderedDict
from dataclasses import dataclass

from workflows.context import digest, fit_context
from workflows.messages import ContextMessage, LLMTurnInput


@dataclass(frozen=True)
class _Entry:
    last_seq: int
    last_digest: str
    system: ContextMessage | None
    messages: list[ContextMessage]


class ContextCache:
    def __init__(self, max_sessions: int, max_chars: int) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max_sessions = max_sessions
        self._max_chars = max_chars

    def context_for(self, turn: LLMTurnInput) -> list[ContextMessage] | None:
        if turn.step > 1:  # after tool calls: their results are only in the workflow
            return None
        if turn.upto_seq == 1:  # a session's first message: everything is in the input
            user = ContextMessage(role="user", content=turn.user_message)
            if turn.system_prompt:
                return [ContextMessage(role="system", content=turn.system_prompt), user]
            return [user]
        entry = self._entries.get(turn.run_id)
        if (
            entry is None
            or entry.last_seq != turn.upto_seq - 1
            or entry.last_digest != turn.previous_digest
        ):
            return None
        self._entries.move_to_end(turn.run_id)
        user = ContextMessage(role="user", content=turn.user_message)
        messages = fit_context([*entry.messages, user], self._max_chars)
        return [entry.system, *messages] if entry.system else messages

    def remember(self, turn: LLMTurnInput, context: list[ContextMessage], reply: str) -> None:
        """Record the context a turn used plus its reply, which becomes message upto_seq + 1."""
        system = context[0] if context and context[0].role == "system" else None
        body = context[1:] if system else context
        messages = fit_context(
            [*body, ContextMessage(role="assistant", content=reply)], self._max_chars
        )
        self._entries[turn.run_id] = _Entry(turn.upto_seq + 1, digest(reply), system, messages)
        self._entries.move_to_end(turn.run_id)
        while len(self._entries) > self._max_sessions:
            self._entries.popitem(last=False)

    def forget(self, turn: LLMTurnInput) -> None:
        self._entries.pop(turn.run_id, None)
