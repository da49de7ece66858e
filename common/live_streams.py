"""The contract between workers that serve live reply text and gateways that read it.

A worker running model calls puts its stream server's address in its Temporal identity, so a
gateway finds it through the pending activity's `last_worker_identity`, with no registry.
"""

import os
import socket

TOKEN_HEADER = "X-Stream-Token"
IDENTITY_MARK = " stream="
LLM_ACTIVITY = "generate_reply"


def stream_identity(url: str) -> str:
    """The worker identity Temporal records on the activities this worker runs."""
    return f"{os.getpid()}@{socket.gethostname()}{IDENTITY_MARK}{url}"


def stream_url_of(identity: str) -> str | None:
    """The stream server address in a worker identity, if it has one."""
    _, mark, rest = identity.partition(IDENTITY_MARK)
    url = rest.split()[0] if mark and rest.strip() else ""
    return url if url.startswith(("http://", "https://")) else None
