"""The README's own-tool example, loaded exactly as written, the way a deployment loads it."""

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import Settings
from tools import ToolContext
from tools.configured import configured_registry

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    match = re.search(r"<!-- tool-example -->\n```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert match, "the README lost its tool example (marked <!-- tool-example -->)"
    return match.group(1)


@pytest.fixture
def acme_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "acme_tools.py").write_text(readme_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "acme_tools"
    sys.modules.pop("acme_tools", None)


async def test_the_readme_tool_loads_through_settings_and_runs(acme_tools: str) -> None:
    settings = Settings(_env_file=None, tool_modules=[acme_tools])
    registry = configured_registry(settings)

    refund = registry.get("refund")
    assert refund is not None and refund.needs_approval and refund.timeout_seconds == 20
    schema = refund.definition().parameters
    assert set(schema["required"]) == {"order_id", "cents"}
    assert schema["properties"]["cents"]["maximum"] == 50_000
    assert {"resolve_date", "calculate", "current_time"} <= set(registry.names())

    context = ToolContext(session_id="s-1", turn=2, call_id="c-9", owner="alice")
    ok = await registry.call("refund", '{"order_id": "A-7", "cents": 250}', context)
    assert ok.ok and ok.content == "refunded 250 cents on A-7 (ref alice:s-1:2:c-9)"
    refused = await registry.call("refund", '{"order_id": "B-7", "cents": 250}', context)
    assert not refused.ok and "unknown order B-7" in refused.content
    invalid = await registry.call("refund", '{"order_id": "A-7", "cents": 0}', context)
    assert not invalid.ok and "field 'cents'" in invalid.content
