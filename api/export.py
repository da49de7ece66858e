"""Export (JSON, lossless; Markdown, to read) and fork, over the whole conversation.

Both page through history across runs (`SessionService.history`), so they work for any
length and after the session expired; exports are streamed, a page at a time.
"""

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from api.errors import ApiError
from api.service import SessionService
from workflows.messages import ChatMessage, ImportBatch, SessionStatus

EXPORT_FORMAT = "durable-chat-session"
EXPORT_VERSION = 1
PAGE = 500
IMPORT_BATCH_CHARS = 200_000  # per import_messages update: far below the 512 KB warning


async def messages(
    service: SessionService, owner: str, session_id: str, upto: int | None = None
) -> AsyncIterator[ChatMessage]:
    after: int | None = 0
    while after is not None:
        page = await service.history(owner, session_id, after, PAGE)
        for message in page.messages:
            if upto is not None and message.seq > upto:
                return
            yield message
        after = page.next


def header(status: SessionStatus) -> dict[str, object]:
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": datetime.now(UTC).isoformat(),
        "session": {
            "session_id": status.session_id,
            "model": status.model,
            "system_prompt": status.system_prompt,
            "inactivity_timeout_seconds": status.inactivity_timeout_seconds,
            "tools": status.tools,
            "busy_policy": status.busy_policy,
        },
        "summary": status.summary.model_dump(mode="json") if status.summary else None,
        "usage": status.usage.model_dump(mode="json"),
    }


async def json_export(
    service: SessionService, owner: str, session_id: str, status: SessionStatus
) -> AsyncIterator[bytes]:
    head = json.dumps(header(status))
    yield (head[:-1] + ', "messages": [').encode()
    first = True
    async for message in messages(service, owner, session_id):
        yield (("" if first else ",") + message.model_dump_json()).encode()
        first = False
    yield b"]}"


async def markdown_export(
    service: SessionService, owner: str, session_id: str, status: SessionStatus
) -> AsyncIterator[bytes]:
    lines = [f"# Session {status.session_id}", "", f"- model: `{status.model}`"]
    if status.system_prompt:
        lines.append(f"- system prompt: {status.system_prompt}")
    lines += [f"- tokens: {status.usage.total_tokens}", ""]
    yield "\n".join(lines).encode()
    async for message in messages(service, owner, session_id):
        yield markdown(message).encode()


def markdown(message: ChatMessage) -> str:
    when = message.created_at.strftime("%Y-%m-%d %H:%M:%S")
    if message.role == "tool":
        title = f"### Tool result `{message.tool_name}` ({message.tool_call_id})"
        body = f"```\n{message.content}\n```"
    else:
        title = f"### {message.role.capitalize()} · {when}"
        body = message.content
    parts = [title, "", body] if body else [title]
    for call in message.tool_calls:
        parts.append(f"- asks for `{call.name}({call.arguments})`")
    if message.error:
        parts.append(f"> error: {message.error}")
    if message.usage:
        parts.append(f"_{message.model} · {message.usage.total_tokens} tokens_")
    return "\n".join(["", *parts, ""])


def fork_end(history: list[ChatMessage], upto_seq: int) -> int:
    """Where a fork at `upto_seq` ends: a user message takes its whole turn (its reply and
    any tool steps), a tool call its results, so the fork never ends mid-turn."""
    picked = next((m for m in history if m.seq == upto_seq), None)
    if picked is None:
        raise ApiError(404, f"no message {upto_seq} in this session")
    turn = [m for m in history if m.turn is not None and m.turn == picked.turn]
    return max(m.seq for m in turn) if turn else upto_seq


def batches(history: list[ChatMessage]) -> list[ImportBatch]:
    out: list[ImportBatch] = []
    current: list[ChatMessage] = []
    size = 0
    for message in history:
        if current and (size + len(message.content) > IMPORT_BATCH_CHARS or len(current) >= 400):
            out.append(ImportBatch(messages=current))
            current, size = [], 0
        current.append(message)
        size += len(message.content)
    if current:
        out.append(ImportBatch(messages=current))
    return out
