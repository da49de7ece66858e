"""Typed tools, the registry that runs them, and loading user tools by module path.

Nothing here touches Temporal: a tool call is plain async Python, so the same registry can run
inside an activity (one call per activity, with the tool's timeout and attempts) and in tests.
The registry never raises for anything the model did wrong; it answers with a `ToolResult` the
model can read and react to.
"""

import asyncio
import importlib
import inspect
import json
import re
import typing
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel, Field, ValidationError

from workflows.messages import ToolPolicy, ToolSpec

ArgsT = TypeVar("ArgsT", bound=BaseModel)
ToolOutput = str | BaseModel
"""What a tool returns: text, or a pydantic model the registry serializes to JSON text."""

DEFAULT_MAX_OUTPUT_CHARS = 16_000
DEFAULT_TIMEOUT_SECONDS = 30.0
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What both OpenAI and Anthropic accept as a function/tool name."""
ENTRY_POINT_GROUP = "durable_chat.tools"


@dataclass(frozen=True)
class ToolContext:
    """Who is calling: lets a tool with side effects make them idempotent.

    The same (owner, session_id, turn, call_id) arrives again when a call is retried after a
    timeout or a lost worker, so a tool that writes somewhere should key the write on
    `idempotency_key` (unique across users: session ids are only unique per owner).
    """

    session_id: str
    turn: int
    call_id: str
    owner: str = ""

    @property
    def idempotency_key(self) -> str:
        prefix = f"{self.owner}:" if self.owner else ""
        return f"{prefix}{self.session_id}:{self.turn}:{self.call_id}"


class ToolError(Exception):
    """A failure whose message is meant for the model as is (no exception type prefix)."""


class RetryableToolError(ToolError):
    """A transient failure (timeout, connection error): worth another attempt."""


class ToolDefinition(ToolSpec):
    """A tool as listed to callers: what the model is told, plus whether it needs approval."""

    needs_approval: bool = False


class ToolResult(BaseModel):
    """The outcome of one call, as the model will see it. Errors are results, not exceptions."""

    name: str
    ok: bool
    content: str
    truncated: bool = False
    retryable: bool = Field(
        default=False,
        description="The failure was transient (timeout, connection); a caller that owns "
        "retries (the activity) may try again, up to the tool's max_attempts.",
    )


class Tool(Generic[ArgsT]):
    """A registered-able tool: the function, its argument model and how to run it."""

    def __init__(
        self,
        func: Callable[..., Awaitable[ToolOutput]],
        *,
        name: str,
        description: str,
        args_model: type[ArgsT],
        wants_context: bool,
        needs_approval: bool = False,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_attempts: int = 1,
    ) -> None:
        if not TOOL_NAME.match(name):
            raise ValueError(f"tool name {name!r} must match {TOOL_NAME.pattern}")
        if not description.strip():
            raise ValueError(f"tool {name!r} needs a description (the model reads it)")
        if timeout_seconds <= 0:
            raise ValueError(f"tool {name!r}: timeout_seconds must be positive")
        if max_attempts < 1:
            raise ValueError(f"tool {name!r}: max_attempts must be at least 1")
        self.func = func
        self.name = name
        self.description = description.strip()
        self.args_model = args_model
        self.wants_context = wants_context
        self.needs_approval = needs_approval
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self._definition: ToolDefinition | None = None

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    async def __call__(self, args: ArgsT, context: ToolContext | None = None) -> ToolOutput:
        if not self.wants_context:
            return await self.func(args)
        if context is None:
            raise TypeError(f"tool {self.name!r} needs a ToolContext")
        return await self.func(args, context)

    def definition(self) -> ToolDefinition:
        """What the model and callers are told; built once, since every model call sends it."""
        if self._definition is None:
            self._definition = ToolDefinition(
                name=self.name,
                description=self.description,
                parameters=self.args_model.model_json_schema(),
                needs_approval=self.needs_approval,
            )
        return self._definition

    def policy(self) -> ToolPolicy:
        """How the workflow must run a call of this tool."""
        return ToolPolicy(
            needs_approval=self.needs_approval,
            timeout_seconds=self.timeout_seconds,
            max_attempts=self.max_attempts,
        )


class _ToolDecorator:
    """Typed so that `@tool(...)` keeps the argument model's type on the resulting `Tool`."""

    def __init__(self, **options: Any) -> None:
        self.options = options

    @overload
    def __call__(self, func: Callable[[ArgsT], Awaitable[ToolOutput]]) -> Tool[ArgsT]: ...

    @overload
    def __call__(
        self, func: Callable[[ArgsT, ToolContext], Awaitable[ToolOutput]]
    ) -> Tool[ArgsT]: ...

    def __call__(self, func: Callable[..., Awaitable[ToolOutput]]) -> Tool[Any]:
        args_model, wants_context = _inspect_signature(func)
        options = dict(self.options)
        name = options.pop("name", None) or func.__name__
        description = options.pop("description", None) or inspect.getdoc(func) or ""
        return Tool(
            func,
            name=name,
            description=description,
            args_model=args_model,
            wants_context=wants_context,
            **options,
        )


def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    needs_approval: bool = False,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    max_attempts: int = 1,
) -> _ToolDecorator:
    """Declare an async function as a tool.

    The function takes one pydantic model (the arguments; its JSON schema, field descriptions
    included, is what the model sees) and optionally a `ToolContext`, and returns `str` or a
    pydantic model. `name` defaults to the function's name, `description` to its docstring.
    `timeout_seconds` and `max_attempts` are for whoever runs the call (the activity's timeout
    and retry policy); `needs_approval` asks for a human's yes before the call runs.
    """
    return _ToolDecorator(
        name=name,
        description=description,
        needs_approval=needs_approval,
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
    )


def _inspect_signature(func: Callable[..., Any]) -> tuple[type[BaseModel], bool]:
    """Find the argument model and whether a ToolContext is wanted; refuse anything else."""
    label = getattr(func, "__qualname__", repr(func))
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"tool {label} must be an async function")
    try:
        hints = typing.get_type_hints(func)
    except NameError as exc:
        raise TypeError(f"tool {label}: cannot resolve its type hints ({exc})") from exc
    params = list(inspect.signature(func).parameters.values())
    if len(params) not in (1, 2):
        raise TypeError(f"tool {label} must take (args_model) or (args_model, ToolContext)")
    model = hints.get(params[0].name)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"tool {label}: first parameter must be annotated with a pydantic model")
    if len(params) == 2 and hints.get(params[1].name) is not ToolContext:
        raise TypeError(f"tool {label}: second parameter must be annotated ToolContext")
    return model, len(params) == 2


class ToolRegistry:
    """The tools a session may use, by name; `call` is the one way to run them."""

    def __init__(self, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS) -> None:
        if max_output_chars < 100:
            raise ValueError("max_output_chars must be at least 100")
        self.max_output_chars = max_output_chars
        self._tools: dict[str, Tool[Any]] = {}

    def register(self, *tools: Tool[Any]) -> None:
        for item in tools:
            existing = self._tools.get(item.name)
            if existing is not None and existing is not item:
                raise ValueError(f"a different tool named {item.name!r} is already registered")
            self._tools[item.name] = item

    def get(self, name: str) -> Tool[Any] | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool[Any]]:
        return iter([self._tools[name] for name in self.names()])

    def __len__(self) -> int:
        return len(self._tools)

    def definitions(self) -> list[ToolDefinition]:
        return [item.definition() for item in self]

    async def call(
        self, name: str, raw_arguments: str | dict[str, Any], context: ToolContext
    ) -> ToolResult:
        """Validate, run under the tool's timeout, and cap the output. Never raises for the
        model's mistakes or the tool's failures (cancellation still propagates)."""
        item = self._tools.get(name)
        if item is None:
            known = ", ".join(self.names()) or "none"
            return self._error(name, f"Unknown tool {name!r}. Available tools: {known}.")
        arguments = _parse_arguments(raw_arguments)
        if isinstance(arguments, str):
            return self._error(name, f"Invalid arguments for tool {name!r}: {arguments}")
        try:
            args = item.args_model.model_validate(arguments)
        except ValidationError as exc:
            return self._error(name, f"Invalid arguments for tool {name!r}: {_describe(exc)}")
        try:
            async with asyncio.timeout(item.timeout_seconds):
                output = await item(args, context)
        except TimeoutError:
            message = f"Tool {name!r} timed out after {item.timeout_seconds:g} s."
            return self._error(name, message, retryable=True)
        except ToolError as exc:
            message = f"Tool {name!r} failed: {exc}"
            return self._error(name, message, retryable=isinstance(exc, RetryableToolError))
        except Exception as exc:
            return self._error(name, f"Tool {name!r} failed: {type(exc).__name__}: {exc}")
        if isinstance(output, BaseModel):
            text = output.model_dump_json()
        elif isinstance(output, str):
            text = output
        else:
            kind = type(output).__name__
            return self._error(name, f"Tool {name!r} returned {kind}, not text or a model.")
        content, truncated = cap_text(text, self.max_output_chars)
        return ToolResult(name=name, ok=True, content=content, truncated=truncated)

    def _error(self, name: str, message: str, *, retryable: bool = False) -> ToolResult:
        content, truncated = cap_text(message, self.max_output_chars)
        return ToolResult(
            name=name, ok=False, content=content, truncated=truncated, retryable=retryable
        )


def cap_text(text: str, limit: int) -> tuple[str, bool]:
    """At most `limit` characters, marker included, so a capped result never exceeds it."""
    if len(text) <= limit:
        return text, False
    marker = f"\n… [truncated {len(text)} chars]"  # widest the count can be
    keep = max(0, limit - len(marker))
    return text[:keep] + f"\n… [truncated {len(text) - keep} chars]", True


def _parse_arguments(raw: str | dict[str, Any]) -> dict[str, Any] | str:
    """The arguments as a dict, or a sentence saying what is wrong with them."""
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            return f"not valid JSON ({exc}). Send one JSON object with the tool's parameters."
    if not isinstance(raw, dict):
        return f"expected a JSON object, got {type(raw).__name__}."
    return raw


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(arguments)"
        parts.append(f"field '{where}': {error['msg']}")
    return "; ".join(parts) + "."


def tools_in(module: ModuleType) -> list[Tool[Any]]:
    """The module's tools, in name order: those named in `__all__` if it has one, otherwise
    those defined in it (a tool merely imported for internal use is not re-registered)."""
    exported = getattr(module, "__all__", None)
    if exported is not None:
        found = [getattr(module, name) for name in sorted(exported)]
        return [value for value in found if isinstance(value, Tool)]
    return [
        value
        for _, value in sorted(vars(module).items())
        if isinstance(value, Tool) and value.func.__module__ == module.__name__
    ]


def load_entry_points(registry: ToolRegistry, module_paths: list[str]) -> list[str]:
    """Register every `@tool` found in each module, so users add tools without editing us.

    A module path is a dotted import path (e.g. `mycompany.chat_tools`) importable by the
    worker, typically listed in settings. The `Tool` objects (what `@tool` returns) defined at
    the module's top level are registered, or, if it has `__all__`, the tools named there (so
    a package can re-export tools from its submodules). A module with none is a configuration
    mistake and is refused, as is a name already taken by a different tool. Returns the
    registered names.

        # mycompany/chat_tools.py
        from pydantic import BaseModel, Field
        from tools import ToolContext, tool

        class Ticket(BaseModel):
            title: str = Field(description="One-line summary.")

        @tool(description="Open a support ticket.", needs_approval=True)
        async def open_ticket(args: Ticket, context: ToolContext) -> str:
            return await tickets.create(args.title, key=context.idempotency_key)
    """
    names: list[str] = []
    for path in module_paths:
        try:
            module = importlib.import_module(path)
        except ImportError as exc:
            raise ImportError(f"cannot import tool module {path!r}: {exc}") from exc
        found = tools_in(module)
        if not found:
            raise ValueError(f"tool module {path!r} defines no @tool functions")
        registry.register(*found)
        names.extend(item.name for item in found)
    return names


def load_package_entry_points(registry: ToolRegistry, group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Register tools that installed packages advertise under an entry-point group.

    In a package's pyproject.toml: `[project.entry-points."durable_chat.tools"]` with
    `mytools = "mycompany.chat_tools"` (a module: all its tools) or
    `"mycompany.chat_tools:open_ticket"` (one tool). Returns the registered names.
    """
    names: list[str] = []
    for point in entry_points(group=group):
        loaded = point.load()
        found = tools_in(loaded) if isinstance(loaded, ModuleType) else [loaded]
        for item in found:
            if not isinstance(item, Tool):
                raise TypeError(f"entry point {point.name!r} is not a @tool or a module")
            registry.register(item)
            if item.name not in names:
                names.append(item.name)
    return names
