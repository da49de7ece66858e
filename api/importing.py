"""Import of a JSON export as a new session: every check happens here, before Temporal sees
a message, so a refused import leaves nothing behind."""

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.errors import ApiError
from api.export import batches
from api.limits import check_model, check_system_prompt, check_timeout, check_tools
from api.schemas import ImportSession
from api.session_config import session_config
from common.ids import ID_PATTERN, is_valid_id
from common.settings import Settings
from tools.registry import ToolRegistry
from workflows.messages import MAX_CONTENT_CHARS, ImportBatch, ImportDone, SessionConfig


def strictly(document: ImportSession, raw: bytes) -> ImportSession:
    """The body again, validated strictly: an export has exact types (no "5" for 5), and a
    lax reading would take a document the schema refuses."""
    try:
        return ImportSession.model_validate_json(raw, strict=True)
    except ValidationError as err:
        raise RequestValidationError(err.errors(include_url=False)) from err


def check_import(
    settings: Settings, tools: ToolRegistry, doc: ImportSession
) -> tuple[SessionConfig, list[ImportBatch], ImportDone]:
    if len(doc.messages) > settings.max_import_messages:
        raise ApiError(
            413,
            f"the export holds {len(doc.messages)} messages; an import takes at most "
            f"{settings.max_import_messages}",
        )
    _check_messages(doc)
    check_system_prompt(settings, doc.session.system_prompt)
    config = session_config(
        settings,
        check_model(settings, doc.session.model),
        system_prompt=doc.session.system_prompt,
        inactivity_timeout_seconds=check_timeout(settings, doc.session.inactivity_timeout_seconds),
        tools=check_tools(settings, tools, doc.session.tools),
        busy_policy=doc.session.busy_policy,
    )
    if doc.summary is not None and not 1 <= doc.summary.upto_seq <= len(doc.messages):
        raise ApiError(
            422, f"summary.upto_seq is {doc.summary.upto_seq}; the export has no such message"
        )
    return config, batches(doc.messages), ImportDone(summary=doc.summary, usage=doc.usage)


def _check_messages(doc: ImportSession) -> None:
    """What the workflow relies on: seqs 1..n, one user message per id, replies to earlier
    messages, turns that never go back."""
    users: set[str] = set()
    turn = 0
    for index, message in enumerate(doc.messages, start=1):
        where = f"messages[{index - 1}] (seq {message.seq})"
        if message.seq != index:
            raise ApiError(422, f"{where}: seqs must run 1, 2, 3... with no gap; wanted {index}")
        if len(message.content) > MAX_CONTENT_CHARS:
            raise ApiError(413, f"{where}: content is longer than {MAX_CONTENT_CHARS} characters")
        if message.role == "user":
            if not is_valid_id(message.id):
                raise ApiError(422, f"{where}: id must match {ID_PATTERN}")
            if message.id in users:
                raise ApiError(422, f"{where}: message id {message.id!r} appears twice")
            users.add(message.id)
        if message.reply_to is not None and message.reply_to not in users:
            raise ApiError(
                422, f"{where}: reply_to {message.reply_to!r} names no earlier user message"
            )
        if message.turn is not None:
            if message.turn < turn:
                raise ApiError(422, f"{where}: turn {message.turn} comes after turn {turn}")
            turn = message.turn
