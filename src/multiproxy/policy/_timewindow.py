"""
Time windows: days of the week and hours of the day in a named time zone.

A window is judged on the wall clock of its zone (``zoneinfo``), so
"Mon-Fri 09:00-17:30 Europe/Berlin" follows daylight saving time.  Hour
ranges are half-open (``09:00-17:30`` includes 09:00:00 and excludes
17:30:00).  A range whose end is not after its start crosses midnight and
belongs to the day it starts on: ``Fri 22:00-06:00`` is Friday 22:00 until
Saturday 06:00, and does not include Friday 03:00.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["TimeWindow", "parse_days", "parse_hours", "parse_zone"]

_DAY_NAMES = {
    "mon": 0, "monday": 0, "tue": 1, "tues": 1, "tuesday": 1, "wed": 2, "wednesday": 2,
    "thu": 3, "thur": 3, "thurs": 3, "thursday": 3, "fri": 4, "friday": 4,
    "sat": 5, "saturday": 5, "sun": 6, "sunday": 6,
}
_DAY_LABELS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_CLOCK = re.compile(r"\s*([0-9]{1,2}):([0-9]{2})\s*\Z")
_DAY = 24 * 3600


def parse_days(spec: str | list[str]) -> frozenset[int]:
    """
    Days of the week (Monday is 0) from ``"Mon-Fri"``, ``"Sat,Sun"``,
    ``"Mon,Wed-Fri"``, ``"Fri-Mon"`` (wrapping round the week), ``"*"`` or a
    list of such strings.  English names, abbreviated or full, any case.

    @raise ValueError: naming the part that is not understood.
    """
    parts = [spec] if isinstance(spec, str) else list(spec)
    days: set[int] = set()
    for part in parts:
        if not isinstance(part, str):
            raise ValueError(f"expected day names such as 'Mon-Fri', got {part!r}")
        for item in part.split(","):
            item = item.strip().lower()
            if item in ("*", "all", "daily"):
                days.update(range(7))
                continue
            first, dash, last = item.partition("-")
            start = _day(first.strip(), spec)
            end = _day(last.strip(), spec) if dash else start
            day = start
            days.add(day)
            while day != end:
                day = (day + 1) % 7
                days.add(day)
    if not days:
        raise ValueError("no days given; write e.g. 'Mon-Fri' or 'Sat,Sun'")
    return frozenset(days)


def _day(name: str, spec: object) -> int:
    try:
        return _DAY_NAMES[name]
    except KeyError:
        raise ValueError(
            f"{name!r} in {spec!r} is not a day of the week (use Mon, Tue, ... Sun, "
            "ranges like Mon-Fri, or lists like Sat,Sun)"
        ) from None


def parse_hours(spec: str | list[str]) -> tuple[tuple[int, int], ...]:
    """
    Ranges of the day, as ``(start, end)`` seconds after midnight, from
    ``"09:00-17:30"``, ``"22:00-06:00"`` (crosses midnight), ``"00:00-24:00"``,
    or a list of such strings (any may match).

    @raise ValueError: naming the range that is not understood.
    """
    parts = [spec] if isinstance(spec, str) else list(spec)
    ranges = []
    for part in parts:
        if not isinstance(part, str):
            raise ValueError(f"expected hours such as '09:00-17:30', got {part!r}")
        for item in part.split(","):
            first, dash, last = item.partition("-")
            if not dash:
                raise ValueError(f"{item.strip()!r} is not a range of hours such as 09:00-17:30")
            start = _clock(first, item, allow_24=False)
            end = _clock(last, item, allow_24=True)
            if start == end % _DAY and end != _DAY:
                raise ValueError(
                    f"{item.strip()!r} is empty (start equals end); write 00:00-24:00 for the "
                    "whole day"
                )
            ranges.append((start, end))
    if not ranges:
        raise ValueError("no hours given; write e.g. '09:00-17:30'")
    return tuple(ranges)


def _clock(text: str, item: str, allow_24: bool) -> int:
    m = _CLOCK.match(text)
    if not m:
        raise ValueError(f"{text.strip()!r} in {item.strip()!r} is not a time of day like 09:00")
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not allow_24)):
        raise ValueError(f"{text.strip()!r} in {item.strip()!r} is not a time of day (00:00-24:00)")
    return hours * 3600 + minutes * 60


def parse_zone(name: str) -> ZoneInfo:
    """
    A time zone by IANA name (``Europe/Berlin``, ``UTC``).

    @raise ValueError: the zone is unknown to this system's tz database.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"expected a time zone name such as 'Europe/Berlin', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name such as 'Europe/Berlin' or 'UTC')"
        ) from None


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """
    When a rule applies: some days of the week, some hours of those days, on
    the wall clock of ``zone``.  See the module docstring for the exact rules.
    """

    days: frozenset[int]
    hours: tuple[tuple[int, int], ...]
    zone: ZoneInfo
    # (second, inside) of the last answer: the answer only changes from one
    # whole second to the next, and a busy proxy asks many times a second.
    _last: list = field(default_factory=lambda: [None], init=False, repr=False,
                        compare=False, hash=False)

    @classmethod
    def parse(
        cls, days: str | list[str] | None = None, hours: str | list[str] | None = None,
        zone: str = "UTC",
    ) -> TimeWindow:
        """A window from the strings a person writes (each part optional)."""
        return cls(
            parse_days(days) if days is not None else frozenset(range(7)),
            parse_hours(hours) if hours is not None else ((0, _DAY),),
            parse_zone(zone),
        )

    def contains(self, epoch: float) -> bool:
        """Whether the instant ``epoch`` (seconds since 1970, UTC) is in the window."""
        second = math.floor(epoch)
        last = self._last[0]
        if last is not None and last[0] == second:
            return last[1]
        inside = self._contains(second)
        self._last[0] = (second, inside)
        return inside

    def _contains(self, second: int) -> bool:
        local = datetime.fromtimestamp(second, self.zone)
        weekday = local.weekday()
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        days = self.days
        for start, end in self.hours:
            if start < end:
                if weekday in days and start <= seconds < end:
                    return True
            elif (weekday in days and seconds >= start) or (
                (weekday - 1) % 7 in days and seconds < end
            ):
                return True
        return False

    def __str__(self) -> str:
        days = ",".join(_DAY_LABELS[d] for d in sorted(self.days))
        hours = ",".join(f"{_fmt(s)}-{_fmt(e)}" for s, e in self.hours)
        return f"{days} {hours} {self.zone.key}"


def _fmt(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"
