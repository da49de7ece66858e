"""`current_time`: the model has no clock, so it asks for one (in the user's time zone)."""

from datetime import datetime

from pydantic import BaseModel, Field

from tools.builtin._zones import Clock, now_in, system_clock, zone
from tools.builtin.dates import WEEKDAY_NAMES
from tools.registry import Tool, tool


class CurrentTimeArgs(BaseModel):
    timezone: str = Field(
        default="UTC",
        max_length=64,
        description="IANA time zone, e.g. 'Europe/Paris' or 'America/New_York'.",
    )


class CurrentTime(BaseModel):
    timezone: str
    iso: datetime
    weekday: str
    utc_offset: str


def make_current_time(clock: Clock = system_clock) -> Tool[CurrentTimeArgs]:
    """The tool, reading the instant from `clock` (tests pass a fixed one)."""

    @tool(
        name="current_time",
        description="The current date and time (ISO 8601) and weekday in a time zone.",
        timeout_seconds=5,
        max_attempts=3,
    )
    async def current_time(args: CurrentTimeArgs) -> CurrentTime:
        tz = zone(args.timezone)
        now = now_in(clock, tz).replace(microsecond=0)
        return CurrentTime(
            timezone=tz.key,
            iso=now,
            weekday=WEEKDAY_NAMES[now.weekday()],
            utc_offset=now.strftime("%z")[:3] + ":" + now.strftime("%z")[3:],
        )

    return current_time


current_time = make_current_time()
