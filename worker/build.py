"""Builds workers from settings; shared by `python -m worker`, the tests and the benchmarks.

Session workflows, the per-user quota workflows and the sessions' bookkeeping activity poll
`task_queue`. Model and tool calls poll `activity_task_queue` when one is set, so a deployment
can run many model workers and a few session workers, or the other way round; `worker_role`
picks what one process runs.
"""

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

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
    """The workers this process runs, by `worker_role`: one per task queue it polls.

    With `stream_url`, the worker running model calls names its stream server in its
    identity, which is how gateways find the live text of a reply.
    """
    separate = settings.activity_task_queue not in (None, settings.task_queue)
    if settings.worker_role != "all" and not separate:
        raise ValueError(
            f"worker_role={settings.worker_role!r} needs CHAT_ACTIVITY_TASK_QUEUE set to a queue "
            "other than CHAT_TASK_QUEUE (otherwise one worker must run everything)"
        )
    calls = _call_activities(client, settings, providers, tools, hub)
    sessions: list[Callable[..., Any]] = [SessionStoreActivities(client).load_previous_session]
    identity = stream_identity(stream_url) if stream_url else None
    if not separate:
        return [_worker(client, settings, settings.task_queue, [*calls, *sessions], True, identity)]
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
    )
