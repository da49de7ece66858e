"""The gateway's Prometheus metrics, served at GET /metrics on the gateway's own port.

The endpoint needs no API key, as scrapers expect, so everything in it is an aggregate over
all users: HTTP requests by route template (`/v1/sessions/{session_id}`, never the path a
client sent), method and status class; Temporal failures by gRPC status and the HTTP status
they became; the number of running sessions. No label holds a session id, user id, message id
or model name. Turn the endpoint off with CHAT_GATEWAY_METRICS_ENABLED=false, or keep /metrics
off the public route at the load balancer, if even traffic volumes are not for everyone.

Each app has its own registry (tests build several apps in one process).
"""

import asyncio
import logging
import time
from datetime import timedelta

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from common.names import WORKFLOW_TYPE
from common.settings import Settings

log = logging.getLogger("api.metrics")

METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"  # no route: 404s, and requests refused before routing (413 body limits)
ACTIVE_SESSIONS_QUERY = f'WorkflowType = "{WORKFLOW_TYPE}" AND ExecutionStatus = "Running"'
COUNT_TIMEOUT = timedelta(seconds=5)
# Seconds; a streamed reply lasts as long as its turn, so the buckets reach ten minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class GatewayMetrics:
    def __init__(self, settings: Settings) -> None:
        self.client: Client | None = None  # set once the app's lifespan has connected
        self._refresh_every = settings.active_sessions_refresh_seconds
        self._counted_at: float | None = None
        self._counting = asyncio.Lock()
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Counter(
            "chat_http_requests",
            "HTTP requests answered, by route template, method and status class.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "chat_http_request_duration_seconds",
            "From a request's arrival to the end of its response (a stream: its whole turn).",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.temporal_errors = Counter(
            "chat_temporal_errors",
            "Temporal calls that failed a request, by gRPC status and the HTTP status answered.",
            ["grpc_status", "http_status"],
            registry=self.registry,
        )
        self.active_sessions = Gauge(
            "chat_active_sessions",
            "Running session workflows (Temporal visibility), counted at most every "
            "CHAT_ACTIVE_SESSIONS_REFRESH_SECONDS.",
            registry=self.registry,
        )
        self.count_failures = Counter(
            "chat_active_sessions_count_failures",
            "Failed visibility counts for chat_active_sessions (the gauge keeps its last value).",
            registry=self.registry,
        )

    async def refresh_active_sessions(self) -> None:
        """Counts running sessions if the last count is older than the refresh interval; a
        scrape never waits on more than one count, however many arrive at once."""
        if self.client is None:
            return
        async with self._counting:
            now = time.monotonic()
            if self._counted_at is not None and now - self._counted_at < self._refresh_every:
                return
            self._counted_at = now
            try:
                counted = await self.client.count_workflows(
                    ACTIVE_SESSIONS_QUERY, rpc_timeout=COUNT_TIMEOUT
                )
            except Exception as err:  # the scrape still answers, with the last count
                self.count_failures.inc()
                log.warning("counting running sessions failed: %s", type(err).__name__)
                return
            self.active_sessions.set(counted.count)

    def temporal_error(self, grpc_status: str, http_status: int) -> None:
        self.temporal_errors.labels(grpc_status, str(http_status)).inc()


class RequestMetrics:
    """ASGI middleware: counts each HTTP request and times it to the end of its response."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == METRICS_PATH:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before any response is answered 500 by the server

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = scope["method"]
            self.metrics.requests.labels(template, method, f"{status // 100}xx").inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - started)


def install(app: FastAPI, settings: Settings) -> GatewayMetrics | None:
    """GET /metrics and the request middleware, unless CHAT_GATEWAY_METRICS_ENABLED=false.
    Call it after adding the app's other middleware: it must see each final status."""
    if not settings.gateway_metrics_enabled:
        return None
    metrics = GatewayMetrics(settings)
    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.get(METRICS_PATH, include_in_schema=False)
    async def prometheus_metrics() -> Response:
        await metrics.refresh_active_sessions()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
