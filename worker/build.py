"""Builds a worker from settings; shared by `python -m worker`, the tests and the benchmarks."""

from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.context_cache import ToolResultCache
from activities.llm import LLMActivities
from activities.providers import ProviderRegistry
from activities.session_store import SessionStoreActivities
from activities.tools import ToolActivities
from common.settings import Settings
from tools.configured import configured_registry
from tools.registry import ToolRegistry
from workflows.session import ChatSessionWorkflow


def build_worker(
    client: Client,
    settings: Settings,
    providers: ProviderRegistry | None = None,
    tools: ToolRegistry | None = None,
) -> Worker:
    providers = providers or ProviderRegistry(settings)
    tools = tools if tools is not None else configured_registry(settings)
    results = ToolResultCache(settings.max_cached_workflows * 4)
    llm = LLMActivities(client, providers, settings, tools, results)
    store = SessionStoreActivities(client)
    tool_runner = ToolActivities(tools, results)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[ChatSessionWorkflow],
        activities=[llm.generate_reply, tool_runner.run_tool, store.load_previous_session],
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        max_cached_workflows=settings.max_cached_workflows,
        graceful_shutdown_timeout=timedelta(seconds=settings.graceful_shutdown_seconds),
    )
