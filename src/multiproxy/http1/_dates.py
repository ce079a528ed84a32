"""
HTTP-date parsing and formatting (RFC 9110 section 5.6.7).

Recipients must accept the three formats (IMF-fixdate, obsolete RFC 850
and asctime) and nothing else: a missing comma, a doubled space, dashes in
an IMF-fixdate, a one-digit hour, a zone other than GMT or a different case
is not an HTTP-date.  Anything else is None, which the freshness rules treat
as "a time in the past" where RFC 9111 5.3 says so.
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

_DAY_NAMES = rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_DAY_NAMES_L = rb"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = rb"(\d{2}):(\d{2}):(\d{2})"
# The grammar is case-sensitive and every separator is exactly one SP.
#: IMF-fixdate: ``Sun, 06 Nov 1994 08:49:37 GMT``
_IMF_FIXDATE = re.compile(
    rb"\A" + _DAY_NAMES + rb", (\d{2}) " + _MONTH + rb" (\d{4}) " + _TIME + rb" GMT\Z"
)
#: obsolete RFC 850: ``Sunday, 06-Nov-94 08:49:37 GMT``
_RFC850 = re.compile(
    rb"\A" + _DAY_NAMES_L + rb", (\d{2})-" + _MONTH + rb"-(\d{2}) " + _TIME + rb" GMT\Z"
)
#: asctime: ``Sun Nov  6 08:49:37 1994`` (a one-digit day is padded with SP)
_ASCTIME = re.compile(
    rb"\A" + _DAY_NAMES + rb" " + _MONTH + rb" (\d{2}| \d) " + _TIME + rb" (\d{4})\Z"
)


def parse_http_date(value: bytes | None, now: float | None = None) -> float | None:
    """
    Seconds since the epoch for an HTTP-date, or None if ``value`` is not one.

    Exactly the three forms of RFC 9110 5.6.7 are read, case-sensitively;
    anything else is invalid.  ``now`` resolves the RFC 850 two-digit year
    (a year more than 50 years in the future means the most recent past
    year with those digits).
    """
    if value is None:
        return None
    value = value.strip(b" \t")
    m = _IMF_FIXDATE.match(value) or _RFC850.match(value)
    if m is not None:
        day, month, year, hour, minute, second = m.groups()
    else:
        m = _ASCTIME.match(value)
        if m is None:
            return None
        month, day, hour, minute, second, year = m.groups()
    mon = _MONTHS[month.lower()]
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
