"""One log format for the worker and the gateway: plain text, or JSON lines for collectors.

Context travels in `extra=`: `log.info("turn finished", extra={"session_id": s, "turn": 3})`.
The JSON formatter writes the fields in `CONTEXT_FIELDS` (and the workflow and run ids the
Temporal SDK's workflow and activity loggers attach) as keys of their own.

Message text is never logged at INFO or above. Code that wants it in a log (for debugging a
conversation) logs it at DEBUG under `extra={"text": ...}`, and the formatters drop a `text`
field from any record above DEBUG, so a mistaken level cannot leak it.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

# Keys copied from `extra=` into a JSON line, in this order.
CONTEXT_FIELDS = (
    "session_id",
    "turn",
    "step",
    "message_id",
    "user",
    "attempt",
    "model",
    "outcome",
    "duration_ms",
    "prompt_tokens",
    "completion_tokens",
    "error_type",
)
TEXT_FIELD = "text"  # conversation text: written at DEBUG only

# Libraries whose DEBUG output is request plumbing (headers included), not ours: they stay at
# INFO when CHAT_LOG_LEVEL=DEBUG.
QUIET_LIBRARIES = ("httpx", "httpcore", "hpack", "asyncio", "urllib3", "openai", "anthropic")


def _text_allowed(record: logging.LogRecord) -> bool:
    return record.levelno <= logging.DEBUG


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then whatever context is given."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        temporal = getattr(record, "temporal_activity", None) or getattr(
            record, "temporal_workflow", None
        )
        if isinstance(temporal, dict):
            for source, key in (("workflow_id", "workflow_id"), ("run_id", "run_id")):
                if temporal.get(source) is not None:
                    line.setdefault(key, temporal[source])
            if temporal.get("workflow_run_id") is not None:
                line.setdefault("run_id", temporal["workflow_run_id"])
            if temporal.get("activity_type") is not None:
                line.setdefault("activity", temporal["activity_type"])
        text = getattr(record, TEXT_FIELD, None)
        if text is not None and _text_allowed(record):
            line[TEXT_FIELD] = text
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The readable format, with the context fields appended as `key=value`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        out = super().format(record)
        context = [
            f"{key}={getattr(record, key)}"
            for key in CONTEXT_FIELDS
            if getattr(record, key, None) is not None
        ]
        text = getattr(record, TEXT_FIELD, None)
        if text is not None and _text_allowed(record):
            context.append(f"{TEXT_FIELD}={text!r}")
        return f"{out} [{' '.join(context)}]" if context else out


def configure_logging(log_format: LogFormat, level: LogLevel) -> None:
    """The root logger writes to stderr in `log_format` at `level`; every process calls this
    once, first thing."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # Python's warnings as log lines in the same format
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level)))
    if log_format == "json":
        # The SDK's loggers append their context to the message as a dict; in JSON it is
        # in fields of its own (workflow_id, run_id, activity).
        from temporalio import activity, workflow

        activity.logger.activity_info_on_message = False
        workflow.logger.workflow_info_on_message = False
