"""The one place where failures become HTTP statuses.

Workflow and activity errors carry an `ApplicationError.type`; Temporal's own errors carry a
gRPC status. Both are mapped here, so every route can simply let them propagate.
"""

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from temporalio.client import (
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from workflows.session import INVALID_MESSAGE, SESSION_BUSY, TOOL_CALL_DECIDED, UNKNOWN_TOOL_CALL

log = logging.getLogger("api.errors")

APPLICATION_ERROR_STATUS = {
    INVALID_MESSAGE: 422,
    SESSION_BUSY: 429,
    UNKNOWN_TOOL_CALL: 404,
    TOOL_CALL_DECIDED: 409,
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
        return _json(APPLICATION_ERROR_STATUS[cause.type], cause.message)
    log.error("update failed: %s", cause)
    return _json(500, "the session could not process the request")


async def _rpc_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RPCError)
    if exc.status == RPCStatusCode.RESOURCE_EXHAUSTED:
        return _json(429, "Temporal is rate limiting this session or namespace; retry shortly")
    if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        return _json(503, "Temporal is not reachable right now; retry shortly")
    if exc.status == RPCStatusCode.NOT_FOUND:
        return _json(404, "session not found")
    log.error("temporal rpc error %s: %s", exc.status, exc.message)
    return _json(502, "Temporal refused the request")


async def _query_failed(_: Request, exc: Exception) -> JSONResponse:
    log.error("query failed: %s", exc)
    return _json(503, "the session could not be read right now (is a worker running?)")


async def _update_timed_out(_: Request, exc: Exception) -> JSONResponse:
    return _json(503, "the session did not answer in time; retry with the same message_id")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(WorkflowUpdateFailedError, _update_failed)
    app.add_exception_handler(RPCError, _rpc_error)
    app.add_exception_handler(WorkflowQueryFailedError, _query_failed)
    app.add_exception_handler(WorkflowQueryRejectedError, _query_failed)
    app.add_exception_handler(WorkflowUpdateRPCTimeoutOrCancelledError, _update_timed_out)
