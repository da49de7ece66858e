"""Where a provider failure becomes a retry decision: once, at the activity boundary.

408/409/429/5xx and connection failures are retryable (Retry-After becomes the next retry
delay); every other failure is not.
"""

from datetime import timedelta

from temporalio.exceptions import ApplicationError

from activities.providers import ProviderError

# ApplicationError types, mapped to HTTP statuses by the gateway (api/errors.py).
PROVIDER_ERROR = "ProviderError"
BAD_MODEL = "BadModel"


def provider_failure(err: ProviderError) -> ApplicationError:
    return ApplicationError(
        err.message,
        type=PROVIDER_ERROR,
        non_retryable=not err.retryable,
        next_retry_delay=timedelta(seconds=err.retry_after) if err.retry_after else None,
    )
