"""Command-line overrides shared by the benchmarks."""

import argparse
from typing import Any


def override(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    opts: Any,
    names: tuple[str, ...],
    least: int = 1,
) -> None:
    """Copy each of `names` given on the command line onto `opts`, refusing values under
    `least` with the option's own name."""
    for name in names:
        value = getattr(args, name)
        if value is None:
            continue
        if value < least:
            parser.error(f"--{name.replace('_', '-')} must be at least {least}")
        setattr(opts, name, value)
