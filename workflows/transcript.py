"""The messages a session run holds in memory: a window of the conversation, by seq.

A run holds what it carried in (the part not yet covered by the running summary, capped) plus
what it adds; continue-as-new passes on only such a tail, so a 10,000-turn session costs a run
no more memory, replay time or carried payload than a 100-turn one. Older messages stay in
the closed runs that held them (`ArchivedRun`), where the `history` query still reads them.
"""

from collections.abc import Iterator

from workflows.messages import ArchivedRun, ChatMessage

# What a continued or resumed run carries at most, in characters of message content. Far
# below Temporal's 512 KB payload warning, with room for the queue, ids and JSON escaping.
CARRY_MAX_CHARS = 200_000


class Transcript:
    """Messages with contiguous seqs starting at `first_seq`."""

    def __init__(self, messages: list[ChatMessage] | None = None, last_seq: int = 0) -> None:
        self._messages = list(messages or [])
        self._empty_last = last_seq  # the count to go on from while nothing is held

    @property
    def first_seq(self) -> int:
        """The seq of the oldest message held (the next seq when nothing is held)."""
        return self._messages[0].seq if self._messages else self.last_seq + 1

    @property
    def last_seq(self) -> int:
        """The seq of the newest message: the session's message count."""
        return self._messages[-1].seq if self._messages else self._empty_last

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[ChatMessage]:
        return iter(self._messages)

    def __reversed__(self) -> Iterator[ChatMessage]:
        return reversed(self._messages)

    def holds(self, seq: int) -> bool:
        return self.first_seq <= seq <= self.last_seq

    def at(self, seq: int) -> ChatMessage:
        if not self.holds(seq):
            raise KeyError(f"message {seq} is not held by this run")
        return self._messages[seq - self.first_seq]

    def get(self, seq: int) -> ChatMessage | None:
        return self.at(seq) if self.holds(seq) else None

    def between(self, after: int, upto: int) -> list[ChatMessage]:
        """Held messages with after < seq <= upto."""
        first = self.first_seq
        return self._messages[max(after + 1 - first, 0) : max(upto + 1 - first, 0)]

    def append(self, **fields: object) -> ChatMessage:
        message = ChatMessage(seq=self.last_seq + 1, **fields)
        self._messages.append(message)
        return message

    def tail(self, after: int, max_chars: int = CARRY_MAX_CHARS) -> list[ChatMessage]:
        """The messages after seq `after`, or the newest of them within `max_chars`.

        Cuts only before a user or assistant message, so a tool call keeps its results.
        """
        kept = self.between(after, self.last_seq)
        size = 0
        start = len(kept)
        for index in range(len(kept) - 1, -1, -1):
            size += len(kept[index].content)
            if size > max_chars:
                break
            if kept[index].role != "tool":
                start = index
        return kept[start:]


def run_holding(archive: list[ArchivedRun], seq: int) -> ArchivedRun | None:
    """The newest archived run that held message `seq`."""
    for run in reversed(archive):
        if run.first_seq <= seq <= run.last_seq:
            return run
    return None
