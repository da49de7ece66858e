"""Settings for every process, from `CHAT_*` environment variables (or a `.env` file).

The gateway and the worker read the same class, so a limit or a model list can never differ
between the process that checks a request and the one that serves it.
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.ids import is_valid_id
from common.logs import LogFormat, LogLevel
from common.model_windows import ModelWindow, window_for
from workflows.messages import (
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    DEFAULT_INACTIVITY_TIMEOUT_SECONDS,
    DEFAULT_MAX_TOOL_STEPS,
    DEFAULT_MAX_TURNS_PER_RUN,
)
from workflows.transcript import CARRY_MAX_CHARS

PROVIDERS = ("local", "openai", "anthropic", "scripted")
# Runs this short keep an evicted session's replay (about 5 ms per turn in the sandbox) under
# 100 ms; with the payload store a hand-over costs about 520 bytes of history (`make bench-long`).
STORED_RUN_TURNS = 10


def split_model(model: str) -> tuple[str, str]:
    """`openai/gpt-4o-mini` -> (`openai`, `gpt-4o-mini`); raises ValueError when malformed."""
    provider, sep, name = model.partition("/")
    if not sep or not name or provider not in PROVIDERS:
        choices = ", ".join(PROVIDERS)
        raise ValueError(f"model {model!r} must be '<provider>/<model>', provider one of {choices}")
    return provider, name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHAT_", env_file=".env", extra="ignore")

    # Temporal
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "chat-sessions"

    # Gateway
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description='JSON object mapping API key to user id, e.g. {"k3y": "alice"}.',
    )
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    reply_wait_seconds: float = 60.0
    max_message_chars: int = 16_000
    max_system_prompt_chars: int = 8_000
    max_request_bytes: int = 256 * 1024
    max_import_bytes: int = Field(
        default=64 * 1024 * 1024,
        description="Body limit of POST /v1/imports (a whole exported session).",
    )
    max_import_messages: int = Field(
        default=100_000, ge=1, description="Messages one import may hold."
    )
    default_inactivity_timeout_seconds: int = DEFAULT_INACTIVITY_TIMEOUT_SECONDS
    max_inactivity_timeout_seconds: int = 30 * 24 * 60 * 60
    max_turns_per_run: int | None = Field(
        default=None,
        ge=1,
        description="Turns a run holds before it continues as new. Unset: "
        f"{STORED_RUN_TURNS} with a payload store (a run's hand-over is then a reference, so "
        "short runs cost little and an evicted session replays little), "
        f"{DEFAULT_MAX_TURNS_PER_RUN} without (each hand-over writes the carried messages).",
    )
    carry_max_chars: int = Field(
        default=CARRY_MAX_CHARS,
        ge=1_000,
        le=CARRY_MAX_CHARS,
        description="Message characters a session carries into its next run at most (the rest "
        "stays readable in the runs that held them); keeps every payload far below 512 KB.",
    )
    temporal_ui_url: str = "http://localhost:8233"

    # Compaction (workflows/session.py, activities/compaction.py)
    compaction_enabled: bool = True
    compaction_model: str | None = Field(
        default=None, description="The model that writes running summaries; none: the session's."
    )
    compaction_threshold: float = Field(
        default=0.25,
        gt=0,
        le=4,
        description="Summarise once the messages left out of the prompt (and not yet summarised) "
        "reach this fraction of the model's prompt budget.",
    )

    # Per-session and per-user limits (workflows/quota.py); unset: no limit and no cost
    max_messages_per_session: int | None = Field(
        default=None,
        ge=1,
        description="User messages one session accepts in its whole life (409 past it); "
        "applied at creation and whenever a session resumes.",
    )
    max_sessions_per_user: int | None = Field(
        default=None,
        ge=1,
        description="Open (not ended or expired) sessions one user may have at once (409 past "
        "it, on creation or on resuming a closed session).",
    )
    quota_messages_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Messages one user may send in any 60 seconds (429 with Retry-After past it).",
    )
    quota_tokens_per_day: int | None = Field(
        default=None,
        ge=1,
        description="Model tokens (prompt + completion) one user may use per UTC day; once "
        "reached, messages get 429 with Retry-After until 00:00 UTC. A turn already admitted "
        "always finishes, so the day's total can pass this by that turn's tokens.",
    )

    # Models
    default_model: str = "local/smollm2"
    model_windows: dict[str, ModelWindow] = Field(
        default_factory=dict,
        description="Context size and reply reserve by model glob, over the built-in ones, e.g. "
        '{"openai/my-model": {"context_tokens": 32768, "output_tokens": 1024}}.',
    )
    context_max_chars: int = Field(
        default=400_000,
        ge=1_000,
        description="Characters of recent messages a worker reads for one prompt at most, "
        "before fitting them to the model's tokens (bounds the context query and the cache).",
    )
    max_output_tokens: int = Field(
        default=512, ge=16, description="Reply tokens kept back in a model's window by default."
    )
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_api_key: SecretStr | None = None
    local_model_path: Path | None = None
    local_context_tokens: int = 2048
    local_threads: int | None = None
    scripted_provider_enabled: bool = False
    provider_timeout_seconds: float = 120.0

    # Tools (the gateway and the worker must load the same ones)
    tool_modules: list[str] = Field(
        default_factory=list,
        description='Dotted module paths whose @tool functions are loaded, e.g. ["acme.tools"].',
    )
    tool_package_entry_points: bool = Field(
        default=True,
        description="Also load tools that installed packages advertise under the "
        "`durable_chat.tools` entry-point group.",
    )
    tool_max_output_chars: int = 16_000
    max_tools_per_session: int = 32
    max_tool_steps: int = DEFAULT_MAX_TOOL_STEPS
    tool_approval_timeout_seconds: int = DEFAULT_APPROVAL_TIMEOUT_SECONDS
    http_fetch_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts the http_fetch tool may GET; the tool exists only when this is set.",
    )
    http_fetch_max_bytes: int = 100_000
    http_fetch_timeout_seconds: float = 10.0

    # Worker
    activity_task_queue: str | None = Field(
        default=None,
        description="Task queue for model and tool activities; unset: the sessions' queue. "
        "A separate queue lets model capacity scale apart from session bookkeeping.",
    )
    worker_role: Literal["all", "sessions", "activities"] = Field(
        default="all",
        description="What a worker process runs: `sessions` (workflows and bookkeeping), "
        "`activities` (model and tool calls, on activity_task_queue) or `all`.",
    )
    stream_host: str = Field(
        default="127.0.0.1",
        description="Where the worker serves live reply text to gateways (internal only).",
    )
    stream_port: int = Field(default=0, description="0: any free port (advertised to gateways).")
    stream_advertise_url: str | None = Field(
        default=None,
        description="The address gateways use to reach this worker's stream server, e.g. "
        "http://worker-3:7300 in a cluster; unset: http://<stream_host>:<bound port>.",
    )
    stream_token: SecretStr | None = Field(
        default=None,
        description="Shared secret gateways present to workers' stream servers; set it "
        "wherever the stream port is reachable from more than this machine.",
    )
    stream_retain_seconds: float = 120.0
    max_stream_subscribers: int = Field(
        default=8, description="Live readers of one session's reply at once (per process)."
    )
    max_concurrent_activities: int = 20
    max_concurrent_workflow_tasks: int = 50
    max_cached_workflows: int = 1000
    graceful_shutdown_seconds: float = 30.0

    # Metrics and logs (README, "Metrics and logs")
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description="Where the worker serves Prometheus metrics (its own and the Temporal "
        "SDK's); 0.0.0.0 for a scraper on another host.",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="The worker's Prometheus port (GET /metrics); unset: no metrics endpoint "
        "(`make run` uses 9464).",
    )
    gateway_metrics_enabled: bool = Field(
        default=True,
        description="Serve Prometheus metrics at GET /metrics on the gateway port, without "
        "authentication: aggregate counts only, nothing per user or session.",
    )
    active_sessions_refresh_seconds: float = Field(
        default=30.0,
        ge=1,
        description="How often at most the gateway counts running sessions in Temporal's "
        "visibility for the chat_active_sessions gauge (on a scrape, when older than this).",
    )
    log_format: LogFormat = Field(
        default="text",
        description="`text` for people, `json` (one object per line) for log collectors.",
    )
    log_level: LogLevel = Field(
        default="INFO",
        description="DEBUG also logs the conversation's text (user messages and replies); "
        "never set it where logs leave the machine.",
    )

    # Encryption of everything Temporal stores (see common/encryption.py)
    encryption_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='JSON object of key id to a base64 32-byte key, e.g. {"2026-11": "..."}; '
        "empty: payloads are stored in clear. Keep old keys after a rotation.",
    )
    encryption_key_id: str | None = Field(
        default=None, description="The key new payloads are sealed with; needed with 2+ keys."
    )

    # External payload storage (common/payload_store.py)
    payload_store_dir: Path | None = Field(
        default=None,
        description="Directory where payloads over payload_store_threshold_bytes are kept, "
        "history holding only a reference; unset: every payload goes to Temporal inline. The "
        "gateway and every worker must see the same directory (one host or a shared "
        "filesystem), and it must be kept as long as Temporal keeps the histories.",
    )
    payload_store_threshold_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=512 * 1024,
        description="Payloads this size or larger (after encryption) go to payload_store_dir.",
    )

    # Codec endpoint: decrypted history for the Temporal UI and CLI (see api/codec.py)
    codec_token_secret: SecretStr | None = Field(
        default=None,
        description="Signs the per-user codec tokens of /codec/u/<token>, the URL the Temporal "
        "UI's Codec Server setting takes (it cannot send an API key); unset: those URLs are 404.",
    )
    codec_allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins whose pages may call /codec (CORS); empty: the origin of "
        "temporal_ui_url. The rest of the API allows no cross-origin calls.",
    )
    codec_max_request_bytes: int = Field(
        default=4 * 1024 * 1024,
        description="Body limit for /codec: one event's payloads, which Temporal allows up to "
        "2 MB, in base64.",
    )
    gateway_public_url: str | None = Field(
        default=None,
        description="The gateway as browsers and the Temporal CLI reach it, e.g. "
        "https://chat.example.com, for the codec URLs of GET /v1/codec; unset: the "
        "address the request came to.",
    )

    @field_validator(
        "encryption_key_id",
        "codec_token_secret",
        "gateway_public_url",
        "payload_store_dir",
        "worker_metrics_port",
        "max_turns_per_run",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`VAR: ${VAR:-}` in docker-compose passes an empty string for "not set"."""
        return None if value == "" else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("codec_token_secret")
    @classmethod
    def _codec_secret_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("CHAT_CODEC_TOKEN_SECRET must be at least 16 characters")
        return value

    @field_validator("api_keys")
    @classmethod
    def _user_ids_are_valid(cls, value: dict[str, str]) -> dict[str, str]:
        for user in value.values():
            if not is_valid_id(user):
                raise ValueError(f"user id {user!r} must be 1-64 letters, digits, '_' or '-'")
        return value

    def current_encryption_key(self) -> str | None:
        """The id of the key new payloads are sealed with; None when encryption is off."""
        if not self.encryption_keys:
            return None
        if self.encryption_key_id is not None:
            if self.encryption_key_id not in self.encryption_keys:
                raise ValueError(f"CHAT_ENCRYPTION_KEY_ID {self.encryption_key_id!r} is not a key")
            return self.encryption_key_id
        if len(self.encryption_keys) > 1:
            raise ValueError("with several CHAT_ENCRYPTION_KEYS, set CHAT_ENCRYPTION_KEY_ID")
        return next(iter(self.encryption_keys))

    def turns_per_run(self) -> int:
        if self.max_turns_per_run is not None:
            return self.max_turns_per_run
        return STORED_RUN_TURNS if self.payload_store_dir is not None else DEFAULT_MAX_TURNS_PER_RUN

    def window_for(self, model: str) -> tuple[int, int]:
        """(context tokens, reply tokens) of `model` (common/model_windows.py)."""
        return window_for(
            model,
            self.model_windows,
            local_context=self.local_context_tokens,
            output_tokens=self.max_output_tokens,
        )

    def available_providers(self) -> set[str]:
        """Providers this deployment can serve; a session may only name one of these."""
        available = {"local"}
        if self.openai_base_url:
            available.add("openai")
        if self.anthropic_api_key:
            available.add("anthropic")
        if self.scripted_provider_enabled:
            available.add("scripted")
        return available


@lru_cache
def get_settings() -> Settings:
    return Settings()
