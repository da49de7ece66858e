"""Typed tools the model can call: declare with `@tool`, collect in a `ToolRegistry`.

Built-in tools live in `tools.builtin` (`builtin_registry()`); user tools are loaded by
module path with `load_entry_points` or from installed packages with
`load_package_entry_points`.
"""

from tools.registry import (
    RetryableToolError,
    Tool,
    ToolContext,
    ToolDefinition,
    ToolError,
    ToolRegistry,
    ToolResult,
    load_entry_points,
    load_package_entry_points,
    tool,
)

__all__ = [
    "RetryableToolError",
    "Tool",
    "ToolContext",
    "ToolDefinition",
    "ToolError",
    "ToolRegistry",
    "ToolResult",
    "load_entry_points",
    "load_package_entry_points",
    "tool",
]
