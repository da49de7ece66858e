"""The tool registry a deployment serves, built from settings.

The gateway (to list tools and check a session's choice) and the worker (to run them) both
build it this way, so they agree on what exists.
"""

from common.settings import Settings
from tools.builtin import HttpFetchConfig, builtin_registry
from tools.registry import ToolRegistry, load_entry_points, load_package_entry_points


def configured_registry(settings: Settings) -> ToolRegistry:
    """Built-in tools, then `tool_modules`, then installed packages' entry points."""
    http = (
        HttpFetchConfig(
            allowed_hosts=frozenset(settings.http_fetch_allowed_hosts),
            max_bytes=settings.http_fetch_max_bytes,
            timeout_seconds=settings.http_fetch_timeout_seconds,
        )
        if settings.http_fetch_allowed_hosts
        else None
    )
    registry = builtin_registry(http, max_output_chars=settings.tool_max_output_chars)
    load_entry_points(registry, settings.tool_modules)
    if settings.tool_package_entry_points:
        load_package_entry_points(registry)
    return registry
