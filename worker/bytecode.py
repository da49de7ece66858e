"""Compiled bytecode for the workflow modules, so a cache miss does not recompile them.

The SDK's sandbox imports a workflow's module afresh for every workflow instance it creates:
each session a worker takes up that is not in its cache (an evicted one, or one another
worker ran) runs `workflows/session.py` again. With a `.pyc` that costs about 1 ms; without
one (`PYTHONDONTWRITEBYTECODE` set, or a read-only tree), Python compiles the source every
time, which measured 12-14 ms per module and 55 ms of a 20-turn run's 200 ms replay.
"""

import compileall
import logging
from pathlib import Path

import workflows

log = logging.getLogger(__name__)


def cache_workflow_bytecode() -> bool:
    """Write the workflow package's `.pyc` files (next to the sources, as an import would
    without `PYTHONDONTWRITEBYTECODE`); False if the tree is read-only (the Dockerfile compiles
    them at build time)."""
    package = Path(workflows.__file__).parent
    try:
        ok = compileall.compile_dir(package, quiet=2, maxlevels=0)
    except OSError:
        ok = False
    if not ok:
        log.debug("no bytecode written for %s: each workflow instance compiles it", package)
    return bool(ok)
