"""The worker's own metrics, recorded through the Temporal SDK's meters.

They appear on the worker's Prometheus endpoint (CHAT_WORKER_METRICS_PORT) beside the SDK's
`temporal_*` metrics. The workflow records through `workflow.metric_meter()`, which skips
every call while a workflow replays, so a turn is counted once however often its history is
replayed; the activities record through `activity.metric_meter()`. Both meters add the
`namespace` and `task_queue` labels (and `workflow_type` or `activity_type`).

Labels stay low-cardinality: an outcome, a token kind, a provider, an error class. Never a
session id, user id, message id or model name (any name an OpenAI-compatible server accepts).
"""

from datetime import timedelta
from typing import Literal

from temporalio.common import MetricMeter

from common.settings import PROVIDERS
from workflows.messages import Usage

TURNS = "chat_turns"
TURN_LATENCY = "chat_turn_latency"
TOKENS = "chat_tokens"
MODEL_ERRORS = "chat_model_errors"

# Milliseconds, from a message being accepted to its reply: queueing, model calls, tools and
# approval waits included.
TURN_LATENCY_BUCKETS_MS = (
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    120_000.0,
    300_000.0,
    900_000.0,
)

TurnOutcomeLabel = Literal["ok", "error", "interrupted", "step_limit"]


def provider_of(model: str) -> str:
    provider = model.partition("/")[0]
    return provider if provider in PROVIDERS else "other"


class SessionMetrics:
    """The session workflow's instruments; made once per workflow instance."""

    def __init__(self, meter: MetricMeter) -> None:
        self._turns = meter.create_counter(TURNS, "Turns answered, by outcome.")
        self._latency = meter.create_histogram(
            TURN_LATENCY, "From a message being accepted to its reply, in ms.", "ms"
        )
        self._tokens = meter.create_counter(TOKENS, "Model tokens used, by kind.")

    def turn(
        self, outcome: TurnOutcomeLabel, model: str, latency: timedelta, usage: Usage | None
    ) -> None:
        labels = {"outcome": outcome, "provider": provider_of(model)}
        self._turns.add(1, labels)
        self._latency.record(max(int(latency.total_seconds() * 1000), 0), labels)
        self.tokens(model, usage)

    def tokens(self, model: str, usage: Usage | None) -> None:
        if usage is None:
            return
        provider = provider_of(model)
        for kind, count in (
            ("prompt", usage.prompt_tokens),
            ("completion", usage.completion_tokens),
        ):
            if count > 0:
                self._tokens.add(count, {"kind": kind, "provider": provider})


def model_error_class(status: int | None, bad_model: bool = False) -> str:
    """A failed model call's class: what an alert would be about, never its message."""
    if bad_model:
        return "bad_model"
    if status is None:
        return "connection"  # no HTTP answer: refused, timed out, broken stream
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return "client_error"


def record_model_error(meter: MetricMeter, model: str, error_class: str) -> None:
    """One failed model call attempt (from an activity: retried attempts count each)."""
    meter.create_counter(MODEL_ERRORS, "Failed model call attempts, by error class.").add(
        1, {"error_type": error_class, "provider": provider_of(model)}
    )
