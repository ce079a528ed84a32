"""
HTTP-date parsing and formatting (RFC 9110 section 5.6.7).

Recipients must accept the three historical formats (IMF-fixdate, RFC 850
and asctime); this parser is also forgiving about case, repeated spaces and
dashes, as RFC 9110 encourages.  Anything it cannot read is None, which the
freshness rules treat as "a time in the past" where the RFC says so.
"""

from __future__ import annotations

import calendar
import re
import time

_MONTHS = {
    b"jan": 1,
    b"feb": 2,
    b"mar": 3,
    b"apr": 4,
    b"may": 5,
    b"jun": 6,
    b"jul": 7,
    b"aug": 8,
    b"sep": 9,
    b"oct": 10,
    b"nov": 11,
    b"dec": 12,
}
_DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_MONTH_NAMES = (
    b"Jan",
    b"Feb",
    b"Mar",
    b"Apr",
    b"May",
    b"Jun",
    b"Jul",
    b"Aug",
    b"Sep",
    b"Oct",
    b"Nov",
    b"Dec",
)

# IMF-fixdate and RFC 850 (and their sloppy variants): day month year time [zone]
_DMY = re.compile(
    rb"^(?:[a-z]{3,9},?[ \t]*)?(\d{1,2})[ \t-]+([a-z]{3})[a-z]*[ \t-]+(\d{4}|\d{2})"
    rb"[ \t]+(\d{1,2}):(\d{2}):(\d{2})(?:[ \t]*(?:gmt|utc|ut|z|\+0000))?$",
    re.IGNORECASE,
)
# asctime: weekday month day time year
_ASCTIME = re.compile(
    rb"^[a-z]{3}[ \t]+([a-z]{3})[ \t]+(\d{1,2})[ \t]+(\d{1,2}):(\d{2}):(\d{2})[ \t]+(\d{4})$",
    re.IGNORECASE,
)


def parse_http_date(value: bytes | None, now: float | None = None) -> float | None:
    """
    Seconds since the epoch for an HTTP-date, or None if ``value`` is not one.

    ``now`` resolves two-digit years (RFC 9110: a year more than 50 years in
    the future means the most recent past year with those digits).
    """
    if value is None:
        return None
    value = value.strip(b" \t")
    m = _DMY.match(value)
    if m is not None:
        day, month, year, hour, minute, second = m.groups()
    else:
        m = _ASCTIME.match(value)
        if m is None:
            return None
        month, day, hour, minute, second, year = m.groups()
    mon = _MONTHS.get(month.lower())
    if mon is None:
        return None
    y = int(year)
    if len(year) == 2:
        this_year = time.gmtime(time.time() if now is None else now).tm_year
        y += this_year - this_year % 100
        if y > this_year + 50:
            y -= 100
    d, h, mi, s = int(day), int(hour), int(minute), int(second)
    if not (1 <= d <= calendar.monthrange(y, mon)[1] and h < 24 and mi < 60 and s <= 60):
        return None
    return float(calendar.timegm((y, mon, d, h, mi, min(s, 59), 0, 0, 0)))


def format_http_date(when: float) -> bytes:
    """``when`` (seconds since the epoch) as an IMF-fixdate."""
    t = time.gmtime(when)
    return b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday],
        t.tm_mday,
        _MONTH_NAMES[t.tm_mon - 1],
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )
