"""Partition naming per event: the part_mode, the suffix and its period.

``batch_time`` names the partition after the batch's closing tick, formatted
by the source server with to_char as cube_dispatcher did. ``event_time``
uses the event's creation time, ``date_field`` a column of the row and
``current_time`` the worker's clock when it applies the event. The last one
depends on when a batch is applied, so a batch replayed after a crash can
land in another partition.
"""

import datetime
import re

from cubemux import timing
from cubemux.errors import ConfigError, EventError

PART_MODES = ("batch_time", "event_time", "date_field", "current_time")

_DATE_TIME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[ T](?P<time>\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)"
    r"(?P<offset>[+-]\d{2}(?::?\d{2})?|Z)?)?$")


def parse_field_time(text, zone):
    """Return the aware datetime that a date or timestamp column's text names.

    A value without an offset is a local time in ZONE. Return None when the
    text is not an ISO date or timestamp.
    """
    match = _DATE_TIME.match(text.strip())
    if match is None:
        return None
    value = match.group("date") + " " + (match.group("time") or "00:00")
    offset = match.group("offset")
    if offset == "Z":
        offset = "+00:00"
    elif offset and ":" not in offset:
        offset = offset[:3] + ":" + (offset[3:] or "00")
    try:
        moment = datetime.datetime.fromisoformat(value + (offset or ""))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment


class Naming:
    """Computes the suffix and the bounds of each event's partition for one job.

    ZONE is the tzinfo in which partition boundaries fall.
    """

    def __init__(self, job, zone):
        self.mode = job.part_mode
        self.part_field = job.part_field
        self.dateformat = job.dateformat
        self.zone = zone
        self.format = None
        self.unit = job.period
        if self.dateformat:
            try:
                self.format = timing.SuffixFormat(self.dateformat)
            except ConfigError:
                # batch_time accepts any to_char format, because the server
                # formats it. Only the other modes need one that cubemux computes.
                if self.mode != "batch_time":
                    raise
            if self.unit is None and self.format is not None:
                self.unit = self.format.unit()
        self._suffixes = {}

    @property
    def per_event(self):
        return self.mode != "batch_time" and bool(self.dateformat)

    def event_moment(self, event, ev_time):
        """Return the time that places EVENT, for the per-event modes."""
        if self.mode == "event_time":
            return ev_time
        if self.mode == "current_time":
            return datetime.datetime.now(datetime.timezone.utc)
        try:
            index = event.columns.index(self.part_field)
        except ValueError:
            raise EventError("part_field %s is not in the event's row: set part_field "
                             "to a column that every event carries" % self.part_field,
                             event.ev_id, event.qualified_table) from None
        value = event.value(index)
        moment = parse_field_time(value, self.zone) if value is not None else None
        if moment is None:
            raise EventError("part_field %s is NULL or not an ISO date or "
                             "timestamp" % self.part_field,
                             event.ev_id, event.qualified_table)
        return moment

    def suffix(self, moment):
        """Return the partition suffix for MOMENT, an aware datetime."""
        local = moment.astimezone(self.zone)
        key = timing.truncate(local.replace(tzinfo=None), self.unit or "second")
        suffix = self._suffixes.get(key)
        if suffix is None:
            suffix = self.format.format(local)
            if len(self._suffixes) > 10000:
                self._suffixes.clear()
            self._suffixes[key] = suffix
        return suffix

    def bounds(self, moment):
        """Return (start, end) of the period containing MOMENT, or None."""
        if self.unit is None or moment is None:
            return None
        return timing.bounds(moment, self.unit, self.zone)
