"""Session and workflow ids.

The workflow id embeds the owner, so a request can only ever address its caller's own
sessions: another user's session id maps to a different workflow id, which does not exist.
"""

import hashlib
import re
import uuid

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)
_PREFIX = "chat"


def is_valid_id(value: str) -> bool:
    return bool(_ID_RE.fullmatch(value))  # `$` alone would let a trailing newline in


def new_id() -> str:
    return uuid.uuid4().hex


def workflow_id(owner: str, session_id: str) -> str:
    if not (is_valid_id(owner) and is_valid_id(session_id)):
        raise ValueError("owner and session id must match " + ID_PATTERN)
    return f"{_PREFIX}:{owner}:{session_id}"


def quota_workflow_id(owner: str) -> str:
    """The id of `owner`'s quota workflow (workflows/quota.py); never a session's id."""
    if not is_valid_id(owner):
        raise ValueError("owner must match " + ID_PATTERN)
    return f"quota:{owner}"


def parse_workflow_id(wf_id: str) -> tuple[str, str] | None:
    """(owner, session_id) for a session workflow id, None for anything else."""
    parts = wf_id.split(":")
    if len(parts) != 3 or parts[0] != _PREFIX:
        return None
    return parts[1], parts[2]


def update_id(message_id: str) -> str:
    """The Temporal update id of sending `message_id`: 16 hex digits of its digest.

    Short, because history records an update's id four times (the SDK's default is a 36-character
    UUID). The same for every resend of a message, so Temporal attaches a resend to the update
    still running for it (the workflow also recognises a resend by the message id)."""
    return hashlib.sha256(message_id.encode()).hexdigest()[:16]
