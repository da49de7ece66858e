"""The tool registry: generated schemas, argument errors as results, caps, context, loading."""

import asyncio
import json
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from tools import (
    RetryableToolError,
    ToolContext,
    ToolError,
    ToolRegistry,
    load_entry_points,
    load_package_entry_points,
    tool,
)

CONTEXT = ToolContext(session_id="s-1", turn=3, call_id="call-7")


class Weather(BaseModel):
    city: str = Field(description="City name, e.g. 'Paris'.")
    days: int = Field(default=1, ge=1, le=7, description="How many days to forecast.")
    unit: Literal["C", "F"] = Field(default="C", description="Temperature unit.")


class Forecast(BaseModel):
    city: str
    days: int


@tool(name="forecast", description="Weather forecast for a city.", needs_approval=True)
async def forecast(args: Weather) -> Forecast:
    return Forecast(city=args.city, days=args.days)


class Text(BaseModel):
    text: str


@tool()
async def echo(args: Text) -> str:
    """Repeat the text back."""
    return args.text


@tool(description="Always fails.")
async def broken(args: Text) -> str:
    raise RuntimeError(f"disk on fire while handling {args.text!r}")


@tool(description="Tells who called.")
async def whoami(args: Text, context: ToolContext) -> str:
    return f"{args.text} from {context.idempotency_key}"


@tool(description="Fails in a way the model should read verbatim.")
async def picky(args: Text) -> str:
    if args.text == "later":
        raise RetryableToolError("upstream busy, try again")
    raise ToolError(f"no record called {args.text!r}")


@tool(description="Takes too long.", timeout_seconds=0.05)
async def sleepy(args: Text) -> str:
    await asyncio.sleep(5)
    return args.text


@pytest.fixture
def registry() -> ToolRegistry:
    registry = ToolRegistry(max_output_chars=200)
    registry.register(forecast, echo, broken, whoami, picky, sleepy)
    return registry


def test_definitions_are_generated_from_the_argument_model(registry: ToolRegistry) -> None:
    definitions = {item.name: item for item in registry.definitions()}
    assert list(definitions) == sorted(definitions)
    weather = definitions["forecast"]
    assert weather.description == "Weather forecast for a city."
    assert weather.needs_approval is True
    schema = weather.parameters
    assert schema == Weather.model_json_schema()
    assert schema["type"] == "object"
    assert schema["required"] == ["city"]
    city, days, unit = (schema["properties"][key] for key in ("city", "days", "unit"))
    assert city["type"] == "string"
    assert city["description"] == "City name, e.g. 'Paris'."
    assert (days["type"], days["minimum"], days["maximum"], days["default"]) == ("integer", 1, 7, 1)
    assert unit["enum"] == ["C", "F"]
    assert definitions["echo"].description == "Repeat the text back."
    assert definitions["echo"].needs_approval is False


def test_decorator_keeps_run_options() -> None:
    assert forecast.name == "forecast"
    assert forecast.args_model is Weather
    assert (sleepy.timeout_seconds, sleepy.max_attempts) == (0.05, 1)
    assert whoami.wants_context and not echo.wants_context


def test_decorator_refuses_what_it_cannot_describe() -> None:
    def not_async(args: Text) -> str:
        return args.text

    async def untyped(args: dict[str, str]) -> str:
        return ""

    async def wrong_second(args: Text, other: str) -> str:
        return other

    async def undocumented(args: Text) -> str:
        return args.text

    with pytest.raises(TypeError, match="async"):
        tool()(not_async)  # type: ignore[arg-type]  # refused statically too
    with pytest.raises(TypeError, match="pydantic model"):
        tool()(untyped)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="ToolContext"):
        tool()(wrong_second)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="description"):
        tool()(undocumented)
    with pytest.raises(ValueError, match="must match"):
        tool(name="has spaces", description="x")(undocumented)


async def test_call_accepts_json_text_or_a_dict(registry: ToolRegistry) -> None:
    result = await registry.call("forecast", '{"city": "Paris", "days": 3}', CONTEXT)
    assert result.ok and not result.truncated
    assert json.loads(result.content) == {"city": "Paris", "days": 3}
    result = await registry.call("echo", {"text": "hi"}, CONTEXT)
    assert (result.name, result.ok, result.content) == ("echo", True, "hi")


async def test_invalid_json_is_an_error_result(registry: ToolRegistry) -> None:
    result = await registry.call("forecast", '{"city": "Paris",', CONTEXT)
    assert not result.ok
    assert "not valid JSON" in result.content
    result = await registry.call("forecast", "[1, 2]", CONTEXT)
    assert not result.ok
    assert "expected a JSON object" in result.content


async def test_validation_errors_name_the_field(registry: ToolRegistry) -> None:
    missing = await registry.call("forecast", {"days": 2}, CONTEXT)
    assert not missing.ok
    assert "field 'city'" in missing.content and "required" in missing.content
    wrong = await registry.call("forecast", {"city": "Paris", "days": "many"}, CONTEXT)
    assert not wrong.ok
    assert "field 'days'" in wrong.content and "integer" in wrong.content
    out_of_range = await registry.call("forecast", '{"city": "Paris", "days": 30}', CONTEXT)
    assert "field 'days'" in out_of_range.content and "less than or equal to 7" in (
        out_of_range.content
    )
    empty = await registry.call("forecast", "", CONTEXT)
    assert not empty.ok and "field 'city'" in empty.content


async def test_unknown_tool_lists_the_known_ones(registry: ToolRegistry) -> None:
    result = await registry.call("teleport", "{}", CONTEXT)
    assert not result.ok
    assert "Unknown tool 'teleport'" in result.content and "forecast" in result.content


async def test_tool_failures_become_results(registry: ToolRegistry) -> None:
    result = await registry.call("broken", {"text": "x"}, CONTEXT)
    assert not result.ok and not result.retryable
    assert result.content == "Tool 'broken' failed: RuntimeError: disk on fire while handling 'x'"
    verbatim = await registry.call("picky", {"text": "abc"}, CONTEXT)
    assert verbatim.content == "Tool 'picky' failed: no record called 'abc'"
    assert not verbatim.retryable
    transient = await registry.call("picky", {"text": "later"}, CONTEXT)
    assert not transient.ok and transient.retryable


async def test_timeout_is_a_retryable_result(registry: ToolRegistry) -> None:
    result = await registry.call("sleepy", {"text": "x"}, CONTEXT)
    assert not result.ok and result.retryable
    assert "timed out after 0.05 s" in result.content


async def test_cancellation_still_propagates(registry: ToolRegistry) -> None:
    @tool(description="Waits.")
    async def wait(args: Text) -> str:
        await asyncio.sleep(5)
        return ""

    registry.register(wait)
    task = asyncio.create_task(registry.call("wait", {"text": ""}, CONTEXT))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_output_is_capped_with_a_marker(registry: ToolRegistry) -> None:
    result = await registry.call("echo", {"text": "a" * 1000}, CONTEXT)
    assert result.ok and result.truncated
    assert len(result.content) <= 200
    kept = result.content.split("\n")[0]
    assert set(kept) == {"a"}
    assert result.content.endswith(f"… [truncated {1000 - len(kept)} chars]")
    error = await registry.call("broken", {"text": "b" * 1000}, CONTEXT)
    assert not error.ok and error.truncated and len(error.content) <= 200
    exact = await registry.call("echo", {"text": "c" * 200}, CONTEXT)
    assert exact.content == "c" * 200 and not exact.truncated


async def test_context_is_passed_when_declared(registry: ToolRegistry) -> None:
    result = await registry.call("whoami", {"text": "hello"}, CONTEXT)
    assert result.content == "hello from s-1:3:call-7"
    assert await whoami(Text(text="direct"), CONTEXT) == "direct from s-1:3:call-7"
    with pytest.raises(TypeError, match="ToolContext"):
        await whoami(Text(text="direct"))


def test_registration(registry: ToolRegistry) -> None:
    registry.register(echo)  # the same tool again is harmless

    @tool(name="echo", description="An impostor.")
    async def other_echo(args: Text) -> str:
        return ""

    with pytest.raises(ValueError, match="already registered"):
        registry.register(other_echo)
    assert registry.get("echo") is echo and "echo" in registry and "teleport" not in registry


def _write_module(directory: Path, name: str, body: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(body))


USER_TOOLS = """
    from pydantic import BaseModel, Field

    from tools import ToolContext, tool
    from tools.builtin.calculator import calculate  # imported, not defined here: not loaded


    class Shout(BaseModel):
        text: str = Field(description="What to shout.")


    @tool(description="Upper-case the text.", needs_approval=True)
    async def shout(args: Shout, context: ToolContext) -> str:
        return f"{args.text.upper()} ({context.call_id})"


    def helper() -> None:
        pass
"""


async def test_load_entry_points_from_a_module_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"user_tools_{uuid.uuid4().hex[:8]}"
    _write_module(tmp_path, name, USER_TOOLS)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = ToolRegistry()
    assert load_entry_points(registry, [name]) == ["shout"]
    shout = registry.get("shout")
    assert shout is not None and shout.needs_approval
    assert shout.definition().parameters["properties"]["text"]["description"] == "What to shout."
    result = await registry.call("shout", '{"text": "hey"}', CONTEXT)
    assert result.content == "HEY (call-7)"
    monkeypatch.delitem(sys.modules, name)


def test_load_entry_points_follows_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"reexports_{uuid.uuid4().hex[:8]}"
    body = "from tools.builtin.calculator import calculate\n\n__all__ = ['calculate']\n"
    _write_module(tmp_path, name, body)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = ToolRegistry()
    assert load_entry_points(registry, [name]) == ["calculate"]
    monkeypatch.delitem(sys.modules, name)


def test_load_entry_points_refuses_bad_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"no_tools_{uuid.uuid4().hex[:8]}"
    _write_module(tmp_path, name, "VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="defines no @tool"):
        load_entry_points(ToolRegistry(), [name])
    with pytest.raises(ImportError, match="cannot import tool module 'no_such_tools_module'"):
        load_entry_points(ToolRegistry(), ["no_such_tools_module"])
    monkeypatch.delitem(sys.modules, name)


def test_load_package_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suffix = uuid.uuid4().hex[:8]
    module = f"pkg_tools_{suffix}"
    _write_module(tmp_path, module, USER_TOOLS)
    info = tmp_path / f"pkg_tools_{suffix}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: pkg-tools-{suffix}\nVersion: 1.0\n"
    )
    group = f"test_tools_{suffix}"
    (info / "entry_points.txt").write_text(f"[{group}]\nall = {module}\none = {module}:shout\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = ToolRegistry()
    assert load_package_entry_points(registry, group=group) == ["shout"]
    assert registry.names() == ["shout"]
    monkeypatch.delitem(sys.modules, module)
