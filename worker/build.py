"""Builds workers from settings; shared by `python -m worker`, the tests and the benchmarks.

Session workflows, the per-user quota workflows and the sessions' bookkeeping activity poll
`task_queue`. Model and tool calls poll `activity_task_queue` when one is set, so a deployment
can run many model workers and a few session workers, or the other way round; `worker_role`
picks what one process runs.
"""

import hashlib
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import temporalio
from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.worker import Worker, WorkerDeploymentConfig

from activities.compaction import CompactionActivities
from activities.context_cache import ToolResultCache
from activities.llm import LLMActivities
from activities.providers import ProviderRegistry
from activities.session_store import SessionStoreActivities
from activities.stream_hub import StreamHub
from activities.tools import ToolActivities
from common.live_streams import stream_identity
from common.settings import Settings
from tools.configured import configured_registry
from tools.registry import ToolRegistry
from worker.bytecode import cache_workflow_bytecode
from workflows.quota import UserQuotaWorkflow
from workflows.session import ChatSessionWorkflow


def build_workers(
    client: Client,
    settings: Settings,
    providers: ProviderRegistry | None = None,
    tools: ToolRegistry | None = None,
    hub: StreamHub | None = None,
    stream_url: str | None = None,
) -> list[Worker]:
    """The workers this process runs, by `worker_role`: sessions, then the calls they make.

    With `stream_url`, the worker running model calls names its stream server in its
    identity, which is how gateways find the live text of a reply. That worker is separate
    from the sessions' even on one task queue: every workflow task records its worker's
    identity (three times per task, two tasks per turn, and in the sticky queue's name), and
    there the short default identity does.
    """
    separate = settings.activity_task_queue not in (None, settings.task_queue)
    if settings.worker_role != "all" and not separate:
        raise ValueError(
            f"worker_role={settings.worker_role!r} needs CHAT_ACTIVITY_TASK_QUEUE set to a queue "
            "other than CHAT_TASK_QUEUE (otherwise one worker must run everything)"
        )
    if settings.worker_role != "activities":
        cache_workflow_bytecode()
    calls = _call_activities(client, settings, providers, tools, hub)
    sessions: list[Callable[..., Any]] = [SessionStoreActivities(client).load_previous_session]
    identity = stream_identity(stream_url) if stream_url else None
    if not separate:
        if identity is None:
            return [_worker(client, settings, settings.task_queue, [*calls, *sessions], True)]
        # The SDK lets two workers share a queue only if they run different kinds of task.
        return [
            _worker(client, settings, settings.task_queue, [], True),
            _worker(client, settings, settings.task_queue, [*calls, *sessions], False, identity),
        ]
    workers = []
    if settings.worker_role in ("all", "sessions"):
        workers.append(_worker(client, settings, settings.task_queue, sessions, True))
    if settings.worker_role in ("all", "activities"):
        assert settings.activity_task_queue is not None
        queue = settings.activity_task_queue
        workers.append(_worker(client, settings, queue, calls, False, identity))
    return workers


def build_worker(
    client: Client,
    settings: Settings,
    providers: ProviderRegistry | None = None,
    tools: ToolRegistry | None = None,
) -> Worker:
    """Everything on one task queue, in one worker (tests, benchmarks, the local stack)."""
    (worker,) = build_workers(
        client,
        settings.model_copy(update={"activity_task_queue": None, "worker_role": "all"}),
        providers,
        tools,
    )
    return worker


def _call_activities(
    client: Client,
    settings: Settings,
    providers: ProviderRegistry | None,
    tools: ToolRegistry | None,
    hub: StreamHub | None,
) -> list[Callable[..., Any]]:
    providers = providers or ProviderRegistry(settings)
    tools = tools if tools is not None else configured_registry(settings)
    results = ToolResultCache(settings.max_cached_workflows * 4)
    llm = LLMActivities(client, providers, settings, tools, results, hub)
    compaction = CompactionActivities(client, providers, settings)
    return [
        llm.generate_reply,
        ToolActivities(tools, results).run_tool,
        compaction.summarize_history,
    ]


DEPLOYMENT_NAME = "chat"
PACKAGES = ("common", "workflows", "activities", "tools", "worker")


@cache
def code_build_id() -> str:
    """Ten hex digits of this code and the SDK's version.

    Every workflow task's two events and every activity's start record the worker's build id;
    the SDK's default (a hash of all loaded bytecode) is 32 characters, which came to 120 of
    the roughly 1,800 bytes a turn writes besides its messages."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(temporalio.__version__.encode())
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _worker(
    client: Client,
    settings: Settings,
    task_queue: str,
    activities: Sequence[Callable[..., Any]],
    with_workflows: bool,
    identity: str | None = None,
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ChatSessionWorkflow, UserQuotaWorkflow] if with_workflows else [],
        activities=activities,
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        max_cached_workflows=settings.max_cached_workflows,
        graceful_shutdown_timeout=timedelta(seconds=settings.graceful_shutdown_seconds),
        identity=identity,
        # Versioning off: the version is only recorded (see code_build_id).
        deployment_config=WorkerDeploymentConfig(
            version=WorkerDeploymentVersion(DEPLOYMENT_NAME, code_build_id()),
            use_worker_versioning=False,
        ),
    )
