"""Builds a worker from settings; shared by `python -m worker`, the tests and the benchmarks."""

from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.llm import LLMActivities
from activities.providers import ProviderRegistry
from activities.session_store import SessionStoreActivities
from common.settings import Settings
from workflows.session import ChatSessionWorkflow


def build_worker(
    client: Client, settings: Settings, providers: ProviderRegistry | None = None
) -> Worker:
    providers = providers or ProviderRegistry(settings)
    llm = LLMActivities(client, providers, settings)
    store = SessionStoreActivities(client)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[ChatSessionWorkflow],
        activities=[llm.generate_reply, store.load_previous_session],
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        max_cached_workflows=settings.max_cached_workflows,
        graceful_shutdown_timeout=timedelta(seconds=settings.graceful_shutdown_seconds),
    )
