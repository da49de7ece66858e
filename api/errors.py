"""The one place where failures become HTTP statuses.

Workflow and activity errors carry an `ApplicationError.type`; Temporal's own errors carry a
gRPC status. Both are mapped here, so every route can simply let them propagate.
"""

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match
from temporalio.client import (
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from workflows.quota_messages import RATE_LIMITED, SESSION_LIMIT, TOKEN_QUOTA_EXHAUSTED
from workflows.session import (
    INVALID_MESSAGE,
    SESSION_BUSY,
    SESSION_FULL,
    TOOL_CALL_DECIDED,
    TURN_IN_PROGRESS,
    UNKNOWN_TOOL_CALL,
)

log = logging.getLogger("api.errors")

APPLICATION_ERROR_STATUS = {
    INVALID_MESSAGE: 422,
    SESSION_BUSY: 429,
    TURN_IN_PROGRESS: 409,  # busy_policy "reject": the session answers one message at a time
    UNKNOWN_TOOL_CALL: 404,
    TOOL_CALL_DECIDED: 409,
    SESSION_FULL: 409,  # the session holds all the messages it may: a new session would not
    SESSION_LIMIT: 409,  # the user's open sessions are all it may have: end one first
    RATE_LIMITED: 429,  # Retry-After: when the oldest counted message leaves the minute
    TOKEN_QUOTA_EXHAUSTED: 429,  # Retry-After: the time to 00:00 UTC
}
RETRY_AFTER_SECONDS = "1"


class ApiError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def not_found(session_id: str) -> ApiError:
    return ApiError(404, f"session {session_id!r} not found")


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    if status in (429, 503) and not (headers and "Retry-After" in headers):
        headers = {**(headers or {}), "Retry-After": RETRY_AFTER_SECONDS}
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _json(exc.status, exc.detail, exc.headers)


async def _update_failed(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WorkflowUpdateFailedError)
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.type in APPLICATION_ERROR_STATUS:
        return _json(APPLICATION_ERROR_STATUS[cause.type], cause.message, _retry_after(cause))
    log.error("update failed: %s", cause)
    return _json(500, "the session could not process the request")


def _retry_after(error: ApplicationError) -> dict[str, str] | None:
    """A refusal that knows when a retry will succeed says so in `next_retry_delay`."""
    delay = error.next_retry_delay
    if delay is None:
        return None
    return {"Retry-After": str(max(1, math.ceil(delay.total_seconds())))}


def _count_temporal_error(request: Request, grpc_status: str, http_status: int) -> None:
    metrics = getattr(request.app.state, "metrics", None)  # api/metrics.py, unless turned off
    if metrics is not None:
        metrics.temporal_error(grpc_status, http_status)


async def _rpc_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RPCError)
    if exc.status == RPCStatusCode.RESOURCE_EXHAUSTED:
        status, detail = 429, "Temporal is rate limiting this session or namespace; retry shortly"
    elif exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        status, detail = 503, "Temporal is not reachable right now; retry shortly"
    elif exc.status == RPCStatusCode.NOT_FOUND:
        status, detail = 404, "session not found"
    else:
        log.error("temporal rpc error %s: %s", exc.status, exc.message)
        status, detail = 502, "Temporal refused the request"
    _count_temporal_error(request, exc.status.name, status)
    return _json(status, detail)


async def _query_failed(request: Request, exc: Exception) -> JSONResponse:
    log.error("query failed: %s", exc)
    _count_temporal_error(request, "QUERY_FAILED", 503)
    return _json(503, "the session could not be read right now (is a worker running?)")


async def _update_timed_out(request: Request, exc: Exception) -> JSONResponse:
    _count_temporal_error(request, "UPDATE_TIMED_OUT", 503)
    return _json(503, "the session did not answer in time; retry with the same message_id")


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own answer, except that a 405 lists in `Allow` every method of the path, not
    only those of the first route whose path matched (RFC 9110: the resource's methods)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = [m for m in _METHODS if _routes_method(request, m)]
        if allowed:
            exc = HTTPException(
                405, exc.detail, {**(exc.headers or {}), "Allow": ", ".join(allowed)}
            )
    return await http_exception_handler(request, exc)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _routes_method(request: Request, method: str) -> bool:
    scope = {
        k: request.scope[k] for k in ("type", "path", "root_path", "headers") if k in request.scope
    }
    scope["method"] = method
    return any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(WorkflowUpdateFailedError, _update_failed)
    app.add_exception_handler(RPCError, _rpc_error)
    app.add_exception_handler(WorkflowQueryFailedError, _query_failed)
    app.add_exception_handler(WorkflowQueryRejectedError, _query_failed)
    app.add_exception_handler(WorkflowUpdateRPCTimeoutOrCancelledError, _update_timed_out)
