"""The built-in tools: dates, arithmetic and the clock always; HTTP fetch only if configured."""

from tools.builtin._zones import Clock, system_clock
from tools.builtin.calculator import calculate
from tools.builtin.clock import make_current_time
from tools.builtin.dates import make_resolve_date
from tools.builtin.http_fetch import HttpFetchConfig, http_fetch_tool, make_http_fetch
from tools.registry import DEFAULT_MAX_OUTPUT_CHARS, ToolRegistry

__all__ = ["HttpFetchConfig", "builtin_registry", "make_http_fetch"]


def builtin_registry(
    http: HttpFetchConfig | None = None,
    *,
    clock: Clock = system_clock,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> ToolRegistry:
    """A registry holding `resolve_date`, `calculate`, `current_time` (+ `http_fetch`)."""
    registry = ToolRegistry(max_output_chars)
    registry.register(make_resolve_date(clock), calculate, make_current_time(clock))
    if http is not None:
        registry.register(http_fetch_tool(http))
    return registry
