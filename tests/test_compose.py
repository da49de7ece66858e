"""docker-compose.yml cannot run here (no Docker engine): check what can be checked statically."""

from pathlib import Path
from typing import Any

import yaml

from common.names import SEARCH_ATTRIBUTES
from common.settings import Settings

ROOT = Path(__file__).parent.parent


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_services_and_their_order() -> None:
    services = compose()["services"]
    assert {"postgresql", "temporal", "temporal-setup", "temporal-ui", "worker", "gateway"} <= set(
        services
    )
    for name in ("postgresql", "temporal", "gateway"):
        assert "healthcheck" in services[name], name
    assert services["temporal"]["depends_on"]["postgresql"]["condition"] == "service_healthy"
    for name in ("worker", "gateway"):
        depends = services[name]["depends_on"]["temporal-setup"]["condition"]
        assert depends == "service_completed_successfully"
        assert services[name]["build"] == "."
    assert services["gateway"]["command"] == ["python", "-m", "api"]
    assert services["worker"]["command"] == ["python", "-m", "worker"]
    assert "/healthz" in " ".join(services["gateway"]["healthcheck"]["test"])


def test_every_chat_setting_named_in_compose_exists() -> None:
    fields = {f"CHAT_{name.upper()}" for name in Settings.model_fields}
    for name in ("worker", "gateway"):
        for variable in compose()["services"][name]["environment"]:
            assert variable in fields, f"{name}: {variable} is not a setting"


def test_gateways_can_read_the_workers_live_replies() -> None:
    services = compose()["services"]
    worker, gateway = services["worker"], services["gateway"]
    assert worker["environment"]["CHAT_STREAM_HOST"] == "0.0.0.0"
    assert str(worker["environment"]["CHAT_STREAM_PORT"]) in worker["expose"]
    token = worker["environment"]["CHAT_STREAM_TOKEN"]
    assert (
        token.startswith("${CHAT_STREAM_TOKEN:?")
        and gateway["environment"]["CHAT_STREAM_TOKEN"] == token
    ), "the stream token is required and shared"


def test_workers_and_gateways_hold_the_same_encryption_keys() -> None:
    services = compose()["services"]
    worker, gateway = services["worker"]["environment"], services["gateway"]["environment"]
    keys = worker["CHAT_ENCRYPTION_KEYS"]
    assert keys.startswith("${CHAT_ENCRYPTION_KEYS:?"), "encryption keys are required"
    assert gateway["CHAT_ENCRYPTION_KEYS"] == keys
    assert worker["CHAT_ENCRYPTION_KEY_ID"] == gateway["CHAT_ENCRYPTION_KEY_ID"]
    assert gateway["CHAT_CODEC_TOKEN_SECRET"].startswith("${CHAT_CODEC_TOKEN_SECRET")
    # What the empty defaults (`${VAR:-}`) arrive as must read as "not set".
    unset = Settings(_env_file=None, encryption_key_id="", codec_token_secret="")
    assert unset.encryption_key_id is None and unset.codec_token_secret is None


def test_search_attributes_registered_match_the_code() -> None:
    command = " ".join(compose()["services"]["temporal-setup"]["command"])
    for attribute, kind in SEARCH_ATTRIBUTES.items():
        assert f"--name {attribute} --type {kind}" in command


def test_image_installs_like_the_readme() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "make install" in dockerfile
    assert "COPY requirements.lock" in dockerfile
