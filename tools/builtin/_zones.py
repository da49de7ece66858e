"""Time zone lookup and the clock, shared by the date and time tools."""

from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Clock = Callable[[], datetime]
"""Returns the current instant; tools take one so tests can fix time."""

_ALIASES = {"utc": "UTC", "z": "UTC", "gmt": "UTC", "etc/utc": "UTC"}


def system_clock() -> datetime:
    return datetime.now(UTC)


def zone(name: str) -> ZoneInfo:
    """The IANA zone called `name`, or a ValueError the model can act on."""
    key = _ALIASES.get(name.strip().lower(), name.strip())
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"Unknown time zone {name!r}; use an IANA name such as 'UTC', "
            "'Europe/Paris' or 'America/New_York'."
        ) from None


def now_in(clock: Clock, tz: ZoneInfo) -> datetime:
    """The clock's instant in `tz` (a naive clock reading is taken as UTC)."""
    instant = clock()
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(tz)
