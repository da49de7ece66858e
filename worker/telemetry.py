"""The worker process's SDK runtime: where its metrics are served and its core logs go."""

import logging

from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from common.settings import Settings
from workflows.metrics import TURN_LATENCY, TURN_LATENCY_BUCKETS_MS


def worker_runtime(settings: Settings) -> Runtime:
    """The SDK runtime of a worker process: Prometheus metrics on `worker_metrics_port` (the
    SDK's own and ours, workflows/metrics.py) when set, and the SDK core's log lines through
    Python logging, so they share the process's format (common/logs.py)."""
    metrics = None
    if settings.worker_metrics_port is not None:
        metrics = PrometheusConfig(
            bind_address=f"{settings.worker_metrics_host}:{settings.worker_metrics_port}",
            histogram_bucket_overrides={TURN_LATENCY: TURN_LATENCY_BUCKETS_MS},
        )
    return Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(
                filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
            ),
            metrics=metrics,
        )
    )
