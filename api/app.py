"""The FastAPI application: one Temporal client per process, made in the lifespan."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from temporalio.client import Client

from api.codec import RequestLimits, redact_tokens_in_access_log
from api.codec import router as codec_router
from api.errors import install_error_handlers
from api.metrics import install as install_metrics
from api.openai_endpoint import install as install_openai_endpoint
from api.routes import router
from api.schemas import Health
from api.service import SessionService
from api.streaming import LiveStreams
from api.web.page import router as web_router
from common.settings import Settings, get_settings
from common.temporal_client import connect
from tools.configured import configured_registry


def create_app(settings: Settings | None = None, client: Client | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.tools = configured_registry(settings)
        temporal = client or await connect(settings)
        app.state.sessions = SessionService(temporal, settings)
        if metrics is not None:
            metrics.client = temporal
        app.state.streams = LiveStreams(app.state.sessions, settings)
        yield
        await app.state.streams.aclose()

    app = FastAPI(
        title="Durable chat sessions",
        version="1.0.0",
        description="LLM chat sessions that survive crashes: each session is a Temporal "
        "workflow. Authenticate with `Authorization: Bearer <API key>`.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(codec_router)
    app.include_router(web_router)  # the web chat page at /chat, not in the OpenAPI schema
    # Body limits (the API's own; a larger one on /codec) and CORS for the Temporal UI on
    # /codec only.
    app.add_middleware(RequestLimits, settings=settings)
    # /v1/chat/completions and /v1/models; after RequestLimits, so that its 413s too get
    # the OpenAI error shape on those paths.
    install_openai_endpoint(app)
    # Outermost: it sees every request and the status it finally got.
    metrics = install_metrics(app, settings)
    app.state.metrics = metrics  # api/errors.py counts Temporal failures there
    redact_tokens_in_access_log()

    @app.get("/healthz", tags=["health"])
    async def healthz() -> Health:
        """Liveness of the gateway process (no Temporal call, so it is cheap to poll)."""
        return Health(status="ok")

    return app
