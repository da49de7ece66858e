"""Process exit for programs that hold a Temporal client."""

import logging
import os
import sys


def exit_without_finalizers(code: int = 0) -> None:
    """Exit once the program's own shutdown is done, skipping interpreter finalization.

    The SDK's Rust runtime threads can call into Python while the interpreter tears down
    ("PyGILState_Release ... must be current"), aborting an otherwise clean exit with
    SIGABRT. By the time this is called the worker has drained and every client is idle.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
