"""Partition periods: to_char-style suffixes computed in Python, and their bounds.

The batch_time mode formats its suffix on the source server with to_char, as
cube_dispatcher did. The other modes format a suffix for each event, which
would cost a query per event on the server, so this module implements the
to_char fields that partition names use. A format with any other field is
rejected when the job loads.
"""

import datetime
import re
import zoneinfo

from cubemux.errors import ConfigError

PERIOD_FORMATS = {
    "hour": "YYYY_MM_DD_HH24",
    "day": "YYYY_MM_DD",
    "month": "YYYY_MM",
    "year": "YYYY",
}

# to_char fields, longest first, with their width and the unit they name.
_FIELDS = [
    ("HH24", 2, "hour"),
    ("HH12", 2, "hour"),
    ("YYYY", 4, "year"),
    ("DDD", 3, "day"),
    ("MI", 2, "minute"),
    ("SS", 2, "second"),
    ("HH", 2, "hour"),
    ("YY", 2, "year"),
    ("MM", 2, "month"),
    ("DD", 2, "day"),
    ("Q", 1, "quarter"),
]

_UNIT_ORDER = ["second", "minute", "hour", "day", "month", "quarter", "year"]

_TOKEN = re.compile("|".join(name for name, _, _ in _FIELDS) + r'|"[^"]*"|[A-Za-z]|.',
                    re.DOTALL)


def _field_value(name, moment):
    if name == "YYYY":
        return "%04d" % moment.year
    if name == "YY":
        return "%02d" % (moment.year % 100)
    if name == "Q":
        return str((moment.month - 1) // 3 + 1)
    if name == "MM":
        return "%02d" % moment.month
    if name == "DD":
        return "%02d" % moment.day
    if name == "DDD":
        return "%03d" % moment.timetuple().tm_yday
    if name == "HH24":
        return "%02d" % moment.hour
    if name in ("HH", "HH12"):
        return "%02d" % ((moment.hour - 1) % 12 + 1)
    if name == "MI":
        return "%02d" % moment.minute
    return "%02d" % moment.second


class SuffixFormat:
    """A dateformat parsed into fields and literal text."""

    def __init__(self, dateformat, place="dateformat"):
        self.dateformat = dateformat
        self.parts = []
        fields = {name for name, _, _ in _FIELDS}
        for token in _TOKEN.findall(dateformat):
            if token in fields:
                self.parts.append(("field", token))
            elif token.startswith('"'):
                self.parts.append(("text", token[1:-1]))
            elif token.isalpha():
                raise ConfigError(
                    "%s = %r: to_char field starting at %r is not supported for "
                    "partition times computed by cubemux; use YYYY, YY, Q, MM, DD, "
                    "DDD, HH24, HH12, HH, MI and SS, or part_mode = batch_time"
                    % (place, dateformat, token))
            else:
                self.parts.append(("text", token))

    def format(self, moment):
        """Return the suffix for MOMENT, a datetime in the partition time zone."""
        return "".join(_field_value(value, moment) if kind == "field" else value
                       for kind, value in self.parts)

    def unit(self):
        """Return the finest unit the format names, such as 'day', or None."""
        units = [unit for name, _, unit in _FIELDS
                 if ("field", name) in self.parts]
        if not units:
            return None
        return min(units, key=_UNIT_ORDER.index)

    def parse(self, suffix):
        """Return the start of the period that SUFFIX names, as a naive datetime.

        Return None when SUFFIX is not a name this format produces, or when the
        format lacks the year, month or day needed to place it.
        """
        pattern = []
        for kind, value in self.parts:
            if kind == "text":
                pattern.append(re.escape(value))
            else:
                width = {name: width for name, width, _ in _FIELDS}[value]
                pattern.append("(?P<%s>\\d{%d})" % (value, width))
        match = re.fullmatch("".join(pattern), suffix)
        if match is None:
            return None
        found = match.groupdict()
        if "YYYY" not in found:
            return None
        try:
            start = datetime.datetime(
                int(found["YYYY"]), int(found.get("MM", 1)), int(found.get("DD", 1)),
                int(found.get("HH24", 0)), int(found.get("MI", 0)),
                int(found.get("SS", 0)))
        except ValueError:
            return None
        if self.format(start) != suffix:
            return None
        return start


def truncate(moment, unit):
    """Return MOMENT truncated to the start of its UNIT, in MOMENT's zone."""
    if unit == "second":
        return moment.replace(microsecond=0)
    if unit == "minute":
        return moment.replace(second=0, microsecond=0)
    if unit == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    if unit == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "month":
        return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if unit == "quarter":
        month = (moment.month - 1) // 3 * 3 + 1
        return moment.replace(month=month, day=1, hour=0, minute=0, second=0,
                              microsecond=0)
    return moment.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)


def advance(start, unit):
    """Return the start of the UNIT after START, a naive local time."""
    if unit == "second":
        return start + datetime.timedelta(seconds=1)
    if unit == "minute":
        return start + datetime.timedelta(minutes=1)
    if unit == "hour":
        return start + datetime.timedelta(hours=1)
    if unit == "day":
        return start + datetime.timedelta(days=1)
    months = {"month": 1, "quarter": 3, "year": 12}[unit]
    index = start.year * 12 + start.month - 1 + months
    return start.replace(year=index // 12, month=index % 12 + 1)


def bounds(moment, unit, zone):
    """Return (start, end) of the UNIT that contains MOMENT, as aware datetimes in ZONE.

    The local start and end are placed in ZONE separately, so a day across a
    daylight saving change is 23 or 25 hours long.
    """
    local = moment.astimezone(zone).replace(tzinfo=None)
    start = truncate(local, unit)
    end = advance(start, unit)
    return start.replace(tzinfo=zone), end.replace(tzinfo=zone)


def load_zone(name, place="timezone"):
    """Return the tzinfo for NAME. Raise ConfigError naming the value."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError("%s = %r is not a known time zone: use a name such as "
                          "'UTC' or 'Europe/Tallinn'" % (place, name)) from None


def literal_time(moment):
    """Return MOMENT as text that PostgreSQL reads as a timestamp or a date."""
    return moment.isoformat(sep=" ")
