"""The contract between workers that serve live reply text and gateways that read it.

A worker running model calls puts its stream server's address in its Temporal identity, so a
gateway finds it through the pending activity's `last_worker_identity`, with no registry.
"""

import os
import socket

TOKEN_HEADER = "X-Stream-Token"
IDENTITY_MARK = " stream="  # how workers named it before (still read)
LLM_ACTIVITY = "generate_reply"


def stream_identity(url: str) -> str:
    """The worker identity Temporal records on the activities this worker runs (twice per
    model call, so no longer than it needs to be): `pid@host url`."""
    return f"{os.getpid()}@{socket.gethostname()} {url}"


def stream_url_of(identity: str) -> str | None:
    """The stream server address in a worker identity, if it has one."""
    for word in identity.split()[1:]:
        url = word.removeprefix(IDENTITY_MARK.strip())
        if url.startswith(("http://", "https://")):
            return url
    return None
