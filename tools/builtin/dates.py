"""`resolve_date`: what a user wrote ("next Friday", "July 4th, 2025") as an exact date.

Models get calendar arithmetic wrong; this does it exactly. Relative phrases are parsed here
(dateutil does not understand them); absolute dates go to dateutil's parser, which reads
ambiguous numeric dates the US way (07/04/2025 is July 4).
"""

import datetime as dt
import re

from dateutil import parser as date_parser
from dateutil.relativedelta import relativedelta
from pydantic import BaseModel, Field

from tools.builtin._zones import Clock, now_in, system_clock, zone
from tools.registry import Tool, tool

WEEKDAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_WEEKDAYS = {name.lower(): index for index, name in enumerate(WEEKDAY_NAMES)} | {
    "mon": 0,
    "tue": 1,
    "tues": 1,
    "wed": 2,
    "thu": 3,
    "thur": 3,
    "thurs": 3,
    "fri": 4,
    "sat": 5,
    "sun": 6,
}
_NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
}
_DAY_OFFSETS = {
    "today": 0,
    "now": 0,
    "tonight": 0,
    "tomorrow": 1,
    "day after tomorrow": 2,
    "yesterday": -1,
    "day before yesterday": -2,
}
_UNIT = r"(?P<unit>day|week|fortnight|month|year)s?"
_COUNT = r"(?P<count>\d{1,6}|" + "|".join(_NUMBER_WORDS) + ")"
_DAY = r"(?P<day>" + "|".join(sorted(_WEEKDAYS, key=len, reverse=True)) + ")"
_IN_FUTURE = re.compile(rf"in {_COUNT} {_UNIT}")
_OFFSET = re.compile(
    rf"{_COUNT} {_UNIT} (?P<direction>ago|before today|from now|from today|later|hence)"
)
_NEAR_UNIT = re.compile(r"(?P<which>next|last|this) (?P<unit>week|month|year)")
_WEEKDAY = re.compile(
    rf"(?:(?P<which>this coming|this past|coming|next|this|last|previous|past) )?{_DAY}"
    r"(?: (?P<week>next week|last week|this week))?"
)
EXAMPLES = "'2025-07-04', 'July 4th, 2025', 'today', 'in 3 days', 'next Friday', '2 weeks ago'"


class ResolveDateArgs(BaseModel):
    expression: str = Field(
        min_length=1,
        max_length=200,
        description="Just the date to resolve, absolute ('July 4th, 2025', '2025-07-04', "
        "'07/04/2025' as month/day) or relative ('tomorrow', 'in 3 days', '2 weeks ago', "
        "'next Friday', 'last Monday', 'this Sunday').",
    )
    timezone: str = Field(
        default="UTC",
        max_length=64,
        description="IANA time zone that decides what 'today' is, e.g. 'America/New_York'.",
    )
    today: dt.date | None = Field(
        default=None,
        description="Reference date (YYYY-MM-DD) for relative expressions; defaults to the "
        "current date in `timezone`.",
    )


class ResolvedDate(BaseModel):
    expression: str
    date: dt.date
    weekday: str
    today: dt.date
    days_from_today: int
    timezone: str


def resolve(expression: str, today: dt.date) -> dt.date:
    """The date `expression` names, counted from `today`; ValueError if it names none.

    Weekday rules: a bare or 'this'/'coming' weekday is the next one on or after today,
    'next X' the first X after today, 'last X' the last X before today, and 'X next week' the X
    of the following Monday-to-Sunday week.
    """
    text = _normalize(expression)
    try:
        found = _relative(text, today) or _absolute(expression, today)
    except (OverflowError, ValueError):
        raise ValueError(f"The date {expression!r} is out of range.") from None
    if found is None:
        raise ValueError(f"Could not understand the date {expression!r}; try e.g. {EXAMPLES}.")
    return found


def _normalize(expression: str) -> str:
    text = " ".join(expression.lower().replace(",", " ").split()).strip(" ?.!")
    for prefix in ("on ", "the "):
        text = text.removeprefix(prefix)
    return text


def _relative(text: str, today: dt.date) -> dt.date | None:
    if text in _DAY_OFFSETS:
        return today + dt.timedelta(days=_DAY_OFFSETS[text])
    if match := _WEEKDAY.fullmatch(text):
        return _weekday(today, _WEEKDAYS[match["day"]], match["which"], match["week"])
    sign, span = 1, None
    if match := _IN_FUTURE.fullmatch(text):
        span = _span(match["count"], match["unit"])
    elif match := _OFFSET.fullmatch(text):
        sign = -1 if match["direction"] in ("ago", "before today") else 1
        span = _span(match["count"], match["unit"])
    elif match := _NEAR_UNIT.fullmatch(text):
        sign = {"next": 1, "last": -1, "this": 0}[match["which"]]
        span = _span("1", match["unit"])
    if span is None:
        return None
    shifted: dt.date = today + sign * span
    return shifted


def _span(count: str, unit: str) -> relativedelta:
    n = int(count) if count.isdigit() else _NUMBER_WORDS[count]
    if unit in ("day", "week", "fortnight"):
        return relativedelta(days=n * {"day": 1, "week": 7, "fortnight": 14}[unit])
    return relativedelta(months=n) if unit == "month" else relativedelta(years=n)


def _weekday(today: dt.date, day: int, which: str | None, week: str | None) -> dt.date | None:
    if week is not None:
        if which is not None:
            return None  # "next Friday next week" means nothing definite
        monday = today - dt.timedelta(days=today.weekday())
        shift = {"next week": 7, "last week": -7, "this week": 0}[week]
        return monday + dt.timedelta(days=shift + day)
    if which in ("next",):
        return today + dt.timedelta(days=(day - today.weekday()) % 7 or 7)
    if which in ("last", "previous", "past", "this past"):
        return today - dt.timedelta(days=(today.weekday() - day) % 7 or 7)
    return today + dt.timedelta(days=(day - today.weekday()) % 7)


def _absolute(expression: str, today: dt.date) -> dt.date | None:
    default = dt.datetime(today.year, today.month, today.day)
    try:
        parsed: dt.datetime = date_parser.parse(expression.strip(), default=default)
    except ValueError as exc:
        if str(exc).startswith(("Unknown string format", "String does not contain a date")):
            return None
        raise  # a date, but an impossible one (February 30th): out of range
    return parsed.date()


def make_resolve_date(clock: Clock = system_clock) -> Tool[ResolveDateArgs]:
    """The tool, reading 'today' from `clock` when the call gives no reference date."""

    @tool(
        name="resolve_date",
        description="Resolve a date expression (absolute or relative, e.g. 'July 4th, 2025' "
        "or 'next Friday') to an ISO date and its day of the week. Use it for any question "
        "about dates or weekdays instead of working them out yourself.",
        timeout_seconds=10,
        max_attempts=3,
    )
    async def resolve_date(args: ResolveDateArgs) -> ResolvedDate:
        tz = zone(args.timezone)
        today = args.today or now_in(clock, tz).date()
        day = resolve(args.expression, today)
        return ResolvedDate(
            expression=args.expression,
            date=day,
            weekday=WEEKDAY_NAMES[day.weekday()],
            today=today,
            days_from_today=(day - today).days,
            timezone=tz.key,
        )

    return resolve_date


resolve_date = make_resolve_date()
