"""The configspec of a job's keys and the check functions it names.

configobj's validate module checks each key against CONFIGSPEC and fills in
the defaults. The built-in ``option`` and ``boolean`` checks are wrapped so
that their messages list the accepted values. The other checks are
cubemux's own, because the built-in ones accept what a job file must not
contain: ``float`` and ``integer`` take ``nan``, ``inf``, ``1e999``,
``1_0`` and non-ASCII digits, ``string`` keeps surrounding blanks, and the
list checks expect configobj's own list syntax, which configparser files
do not use.

Every check function receives the interpolated text of one key, or the
default from CONFIGSPEC when the file does not set the key, and raises
Invalid with the text that follows "expected" in the error message.
"""

import dataclasses
import math
import os
import re

import configobj
import psycopg2
import psycopg2.extensions
from configobj import validate

# Keys that cubemux adds are in the second half. job_name and
# pgq_consumer_id have no default here because load_job always supplies them:
# the file name without its extension, and %(job_name)s.
CONFIGSPEC = """\
# Keys of skytools' cube_dispatcher (manual of skytools 2.1.13).
job_name = name()
src_db = connect_string()
dst_db = connect_string()
pgq_queue_name = name()
pgq_consumer_id = name()
mode = option(keep_latest, keep_all, default=keep_latest)
dateformat = text(default=YYYY_MM_DD)
part_template = text(default='')
loop_delay = seconds(min=0, max=86400, default=1.0)
connection_lifetime = seconds(min=0, max=31536000, default=1200.0)
logfile = path(default=None)
pidfile = path(default=None)
log_count = whole(min=0, unit=files, default=3)
log_size = whole(min=1, unit=bytes, default=10485760)
use_skylog = boolean(default=False)

# Keys that cubemux adds.
timezone = time_zone(default=None)
worker_timeout = seconds(min=1, max=86400, default=60.0)
max_backoff = seconds(min=1, max=86400, default=60.0)
part_mode = option(batch_time, event_time, date_field, current_time, default=batch_time)
part_field = column(default=None)
period = option(hour, day, month, year, default=None)
pre_part = text(default='')
post_part = text(default='')
retention_period = interval(default=None)
retention_action = option(drop, detach, default=drop)
ignore_old_events = boolean(default=False)
fields = column_pairs(default=None)
skip_fields = column_list(default='')
table_map = table_pairs(default='')
event_types = event_types(default='I,U,D')
on_truncate = option(error, ignore, truncate, default=error)
on_new_column = option(error, ignore, add, default=error)
on_error = option(stop, deadletter, default=stop)
"""

# Keys whose value may span several lines: SQL, connection strings and lists.
MULTILINE_KEYS = frozenset({
    "src_db", "dst_db", "part_template", "pre_part", "post_part",
    "fields", "skip_fields", "table_map",
})

# Keys whose value may contain a password, so messages never show it.
SECRET_KEYS = frozenset({"src_db", "dst_db"})

# The value to suggest for each required key when the file lacks it.
REQUIRED_HINTS = {
    "src_db": "a libpq connection string of the source database, "
              "such as 'dbname=sourcedb'",
    "dst_db": "a libpq connection string of the destination database, "
              "such as 'dbname=dataminedb'",
    "pgq_queue_name": "the name of the PgQ queue to consume",
}

EVENT_TYPES = ("I", "U", "D")

# PostgreSQL's NAMEDATALEN is 64, so a name is at most 63 bytes long.
MAX_NAME_BYTES = 63

_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_WHOLE = re.compile(r"[+-]?\d+", re.ASCII)
_INTERVAL = re.compile(r"(\d+)\s*(hour|day|week|month|year)s?",
                       re.ASCII | re.IGNORECASE)
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")

# Days per interval unit, rounded up, for the upper limit only. A retention
# of more than 1000 years is taken for a typo, and the limit keeps the
# cut-off time within the range of datetime.
_UNIT_DAYS = {"hour": 1 / 24, "day": 1, "week": 7, "month": 31, "year": 366}
_MAX_RETENTION_DAYS = 1000 * 366


class Invalid(validate.ValidateError):
    """A value that a key does not accept. The message lists what it accepts."""


@dataclasses.dataclass(frozen=True)
class RetentionPeriod:
    """How long partitions are kept: COUNT times UNIT (hour, day, week, month, year)."""

    count: int
    unit: str

    def __str__(self):
        return "%d %s%s" % (self.count, self.unit, "" if self.count == 1 else "s")


def keys():
    """Return the job keys that CONFIGSPEC lists, in its order."""
    return tuple(configobj.ConfigObj(configspec=CONFIGSPEC.splitlines()).configspec)


def validate_values(values):
    """Check VALUES ({key: interpolated text}) against CONFIGSPEC.

    Return (converted, errors). CONVERTED maps every key that passed, and
    every unset key with a default, to its value. ERRORS maps each key that
    failed to its ValidateError, or to None when the key is required and
    VALUES lacks it.
    """
    document = configobj.ConfigObj(values, configspec=CONFIGSPEC.splitlines(),
                                   interpolation=False)
    outcome = document.validate(_VALIDATOR, preserve_errors=True)
    errors = {}
    for _sections, key, error in configobj.flatten_errors(document, outcome):
        errors[key] = None if error is False else error
    converted = {key: value for key, value in document.items() if key not in errors}
    return converted, errors


def _name(value):
    if not value:
        raise Invalid("a name, which cannot be empty")
    return value


def _connect_string(value):
    expected = "a libpq connection string such as 'dbname=sourcedb'"
    if not value.strip():
        raise Invalid(expected)
    if "\ufffd" in value:
        return value.strip()  # The line's bad UTF-8 is reported already.
    try:
        psycopg2.extensions.parse_dsn(value.strip())
    except psycopg2.ProgrammingError as error:
        # libpq's message names the bad keyword, never the password's value.
        raise Invalid("%s (libpq: %s)" % (expected, str(error).strip())) from None
    return value.strip()


def _text(value):
    return value.strip()


def _path(value):
    return os.path.expanduser(value) if value else None


def _time_zone(value):
    # The source server checks the name when the worker sets its TimeZone,
    # because PostgreSQL accepts zones that zoneinfo does not find, such as
    # POSIX rules. configrules checks it with zoneinfo only where cubemux
    # computes partition times itself.
    if not value:
        raise Invalid("a time zone name such as 'UTC', or no timezone line to "
                      "use the source server's zone")
    return value


def _option(value, *options):
    try:
        return validate.is_option(value, *options)
    except validate.ValidateError:
        raise Invalid(_either(options)) from None


def _boolean(value):
    try:
        return bool(validate.is_boolean(value))
    except validate.ValidateError:
        raise Invalid("1, 0, true, false, yes, no, on or off") from None


def _seconds(value, min, max):
    minimum = int(min)
    maximum = int(max)
    expected = "a number of seconds from %d to %d" % (minimum, maximum)
    if not _DECIMAL.fullmatch(value):
        raise Invalid(expected)
    number = float(value)
    if not math.isfinite(number) or not minimum <= number <= maximum:
        raise Invalid(expected)
    return number


def _whole(value, min, unit):
    minimum = int(min)
    if not _WHOLE.fullmatch(value) or int(value) < minimum:
        raise Invalid("a whole number of %s, %d or more" % (unit, minimum))
    return int(value)


def _interval(value):
    expected = ("a number and a unit such as '3 months', '90 days' or '12 hours' "
                "(units: hours, days, weeks, months, years)")
    match = _INTERVAL.fullmatch(value)
    if match is None:
        raise Invalid(expected)
    count = int(match.group(1))
    unit = match.group(2).lower()
    if count < 1:
        raise Invalid(expected + ", with a number of 1 or more")
    if count * _UNIT_DAYS[unit] > _MAX_RETENTION_DAYS:
        raise Invalid(expected + ", of at most 1000 years")
    return RetentionPeriod(count, unit)


def _column(value):
    _check_name(value, "a column name")
    return value


def _column_list(value):
    expected = "a comma-separated list of column names"
    names = _split_list(value, expected)
    for name in names:
        _check_name(name, expected)
    _check_once(names, expected, "column")
    return tuple(names)


def _column_pairs(value):
    expected = ("a comma-separated list of column names, each optionally "
                "written source:target to rename it")
    items = _split_list(value, expected)
    if not items:
        raise Invalid(expected + ", with at least one column (remove the line to "
                      "copy every column)")
    pairs = []
    for item in items:
        parts = [part.strip() for part in item.split(":")]
        if len(parts) > 2:
            raise Invalid("%s, but %r has more than one ':'" % (expected, item))
        for part in parts:
            _check_name(part, expected)
        pairs.append((parts[0], parts[-1]))
    _check_once([source for source, _ in pairs], expected, "source column")
    _check_once([target for _, target in pairs], expected, "target column")
    return tuple(pairs)


def _table_pairs(value):
    expected = "comma-separated source_schema.table:dest_schema.table pairs"
    pairs = []
    for item in _split_list(value, expected):
        sides = [side.strip() for side in item.split(":")]
        if len(sides) != 2:
            raise Invalid("%s, but %r does not have one ':' between two tables"
                          % (expected, item))
        pairs.append(tuple(_qualified_table(side, item, expected) for side in sides))
    _check_once(["%s.%s" % source for source, _ in pairs], expected,
                "source table", verb="mapped")
    return tuple(pairs)


def _event_types(value):
    expected = "a comma-separated list of %s" % _either(EVENT_TYPES, "and")
    types = [item.strip() for item in value.split(",")]
    if types == [""]:
        raise Invalid(expected + ", with at least one of them")
    for item in types:
        if item not in EVENT_TYPES:
            raise Invalid("%s, but %r is not one of them" % (expected, item))
    _check_once(types, expected, "event type")
    return tuple(kind for kind in EVENT_TYPES if kind in types)


def _split_list(value, expected):
    """Return the comma-separated items of VALUE. An empty VALUE has none."""
    if not value.strip():
        return []
    items = [item.strip() for item in value.split(",")]
    for position, item in enumerate(items, start=1):
        if not item:
            raise Invalid("%s, but item %d of %d is empty"
                          % (expected, position, len(items)))
    return items


def _check_name(name, expected):
    if not name:
        raise Invalid("%s, but a name is empty" % expected)
    if _CONTROL_CHARACTER.search(name):
        raise Invalid("%s, but %r contains a line break or another control "
                      "character: separate names with commas" % (expected, name))
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise Invalid("%s, but %r is %d bytes long, more than PostgreSQL's "
                      "limit of %d" % (expected, name, size, MAX_NAME_BYTES))


def _qualified_table(text, item, expected):
    parts = text.split(".")
    if len(parts) != 2 or not all(part.strip() for part in parts):
        raise Invalid("%s, but %r in %r is not written schema.table"
                      % (expected, text, item))
    schema, table = (part.strip() for part in parts)
    _check_name(schema, expected)
    _check_name(table, expected)
    return schema, table


def _check_once(items, expected, noun, verb="listed"):
    seen = set()
    for item in items:
        if item in seen:
            raise Invalid("%s, but %s %s is %s twice" % (expected, noun, item, verb))
        seen.add(item)


def _either(options, conjunction="or"):
    options = list(options)
    if len(options) == 1:
        return options[0]
    return "%s %s %s" % (", ".join(options[:-1]), conjunction, options[-1])


_VALIDATOR = validate.Validator({
    "option": _option,
    "boolean": _boolean,
    "name": _name,
    "connect_string": _connect_string,
    "text": _text,
    "path": _path,
    "time_zone": _time_zone,
    "seconds": _seconds,
    "whole": _whole,
    "interval": _interval,
    "column": _column,
    "column_list": _column_list,
    "column_pairs": _column_pairs,
    "table_pairs": _table_pairs,
    "event_types": _event_types,
})
