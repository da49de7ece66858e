"""`python -m api`: serve the gateway with uvicorn on CHAT_GATEWAY_HOST:CHAT_GATEWAY_PORT."""

import uvicorn

from api.app import create_app
from common.logs import configure_logging
from common.process import exit_without_finalizers
from common.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        # Uvicorn's loggers (access lines included) go through the root logger's format.
        log_config=None,
        log_level=settings.log_level.lower(),
        # Longer than common clients' idle keep-alive (httpx: 5 s), so the server never
        # closes a connection a client is about to reuse.
        timeout_keep_alive=75,
    )
    exit_without_finalizers(0)
