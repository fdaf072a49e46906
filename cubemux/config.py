"""Load and validate cube_dispatcher job files.

A job file is an ini file (syntax in cubemux.iniformat) whose
``[cube_dispatcher]`` section contains the job's keys. The keys, their
defaults and the names that ``%(name)s`` can use without setting them
follow skytools: ``job_name`` (the file name without its extension),
``service_name``, ``host_name``, ``config_dir`` and ``config_file``.
Keys that cubemux adds are marked in KEYS.
"""

import dataclasses
import difflib
import math
import os
import re
import socket
from collections.abc import Callable

from cubemux.errors import ConfigError
from cubemux.iniformat import (
    DEFAULT_SECTION, InterpolationError, interpolate, parse_ini)

SECTION = "cube_dispatcher"

MODES = ("keep_latest", "keep_all")

_BOOLEANS = {
    "1": True, "yes": True, "true": True, "on": True,
    "0": False, "no": False, "false": False, "off": False,
}

_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_WHOLE = re.compile(r"[+-]?\d+", re.ASCII)

_UNIQUE_CONSTRAINT = re.compile(r"\b(primary\s+key|unique)\b", re.IGNORECASE)
_COPIED_INDEXES = re.compile(r"\bincluding\s+(all|indexes)\b", re.IGNORECASE)


class _Invalid(ValueError):
    """A value that a key does not accept. The message lists what it accepts."""


def _name(value):
    if not value:
        raise _Invalid("a name, which cannot be empty")
    return value


def _connect_string(value):
    if not value.strip():
        raise _Invalid("a libpq connection string such as 'dbname=sourcedb'")
    return value.strip()


def _text(value):
    return value.strip()


def _path(value):
    return os.path.expanduser(value) if value else None


def _time_zone(value):
    if not value:
        raise _Invalid("a time zone name such as 'UTC', or no timezone line to "
                       "use the source server's zone")
    return value


def _mode(value):
    if value not in MODES:
        raise _Invalid("keep_latest or keep_all")
    return value


def _boolean(value):
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        raise _Invalid("1, 0, true, false, yes, no, on or off") from None


def _seconds(minimum):
    expected = "a number of seconds, %d or more" % minimum

    def parse(value):
        if not _DECIMAL.fullmatch(value):
            raise _Invalid(expected)
        number = float(value)
        if not math.isfinite(number) or number < minimum:
            raise _Invalid(expected)
        return number
    return parse


def _whole_number(minimum, unit):
    expected = "a whole number of %s, %d or more" % (unit, minimum)

    def parse(value):
        if not _WHOLE.fullmatch(value) or int(value) < minimum:
            raise _Invalid(expected)
        return int(value)
    return parse


REQUIRED = object()


@dataclasses.dataclass(frozen=True)
class _Key:
    """The parser, the default and the one-line rule of one key."""

    parse: Callable[[str], object]
    default: object = None
    one_line: bool = True
    secret: bool = False
    hint: str = ""


KEYS = {
    "job_name": _Key(_name),
    "src_db": _Key(_connect_string, REQUIRED, one_line=False, secret=True,
                   hint="a libpq connection string of the source database, "
                   "such as 'dbname=sourcedb'"),
    "dst_db": _Key(_connect_string, REQUIRED, one_line=False, secret=True,
                   hint="a libpq connection string of the destination "
                   "database, such as 'dbname=dataminedb'"),
    "pgq_queue_name": _Key(_name, REQUIRED,
                           hint="the name of the PgQ queue to consume"),
    "pgq_consumer_id": _Key(_name),
    "mode": _Key(_mode, "keep_latest"),
    "dateformat": _Key(_text, "YYYY_MM_DD"),
    "part_template": _Key(_text, "", one_line=False),
    "loop_delay": _Key(_seconds(0), 1.0),
    "connection_lifetime": _Key(_seconds(0), 1200.0),
    "logfile": _Key(_path),
    "pidfile": _Key(_path),
    "log_count": _Key(_whole_number(0, "files"), 3),
    "log_size": _Key(_whole_number(1, "bytes"), 10485760),
    "use_skylog": _Key(_boolean, False),
    # Keys that cubemux adds.
    "timezone": _Key(_time_zone),
    "worker_timeout": _Key(_seconds(1), 60.0),
    "max_backoff": _Key(_seconds(1), 60.0),
}

# Names that skytools defines for every job file.
BUILTIN_NAMES = ("job_name", "service_name", "host_name", "config_dir",
                 "config_file")

# Keys that skytools scripts accept and cubemux ignores without a warning.
_IGNORED_SKYTOOLS_KEYS = frozenset({
    "pgq_lazy_fetch", "pgq_autocommit", "exception_sleep", "use_syslog",
    "syslog_facility", "syslog_ident", "stats_period",
    "pgq_batch_collect_events", "pgq_batch_collect_interval", "pgq_keep_lag",
})


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """One validated job file."""

    path: str
    job_name: str
    src_db: str
    dst_db: str
    pgq_queue_name: str
    pgq_consumer_id: str
    mode: str
    dateformat: str
    part_template: str
    loop_delay: float
    connection_lifetime: float
    logfile: str | None
    pidfile: str | None
    log_count: int
    log_size: int
    use_skylog: bool
    timezone: str | None
    worker_timeout: float
    max_backoff: float
    warnings: tuple = ()


def default_template(mode):
    """Return the partition template used when part_template is empty."""
    create = "create table _DEST_TABLE (like _PARENT including defaults)"
    if mode == "keep_latest":
        return create + ";\nalter table only _DEST_TABLE add primary key (_PKEY)"
    return create


def load_job(path):
    """Load and validate one job file. Raise ConfigError listing every problem.

    Problems and warnings are ordered by line and start with ``PATH:LINE:``,
    or with ``PATH:`` when they concern no single line. Warnings (ignored
    keys and sections, a template that does not fit the mode) go into
    JobConfig.warnings.
    """
    text, problems = _read_text(path)
    if text is None:
        raise ConfigError(_located(path, problems))
    parsed = parse_ini(text)
    problems += parsed.errors
    warnings = list(parsed.warnings)

    section = parsed.sections.get(SECTION)
    if section is None:
        problems.append((None, _missing_section(parsed.sections)))
        raise ConfigError(_located(path, problems))
    settings = dict(parsed.sections.get(DEFAULT_SECTION, {}))
    settings.update(section)

    values, referenced = _resolve(path, settings, problems)
    warnings += _section_warnings(parsed.sections)
    warnings += _key_warnings(section, referenced)
    if problems:
        raise ConfigError(_located(path, problems))

    template = values["part_template"] or default_template(values["mode"])
    warnings += _template_warnings(values["mode"], template)
    return JobConfig(
        path=os.path.abspath(path),
        job_name=values["job_name"],
        src_db=values["src_db"],
        dst_db=values["dst_db"],
        pgq_queue_name=values["pgq_queue_name"],
        pgq_consumer_id=values["pgq_consumer_id"],
        mode=values["mode"],
        dateformat=values["dateformat"],
        part_template=template,
        loop_delay=values["loop_delay"],
        connection_lifetime=values["connection_lifetime"],
        logfile=values["logfile"],
        pidfile=values["pidfile"],
        log_count=values["log_count"],
        log_size=values["log_size"],
        use_skylog=values["use_skylog"],
        timezone=values["timezone"],
        worker_timeout=values["worker_timeout"],
        max_backoff=values["max_backoff"],
        warnings=tuple(_located(path, warnings)),
    )


def _located(path, items):
    """Return ``(line, message)`` items as text in line order.

    Items without a line come last.
    """
    ordered = sorted(items, key=lambda item: (item[0] is None, item[0] or 0))
    return [
        "%s: %s" % (path, message) if line is None
        else "%s:%d: %s" % (path, line, message)
        for line, message in ordered
    ]


def _read_text(path):
    """Return (text, problems). Text is None when the file cannot be read.

    Bytes that are not UTF-8 are reported per line and replaced, so that the
    rest of the file is still checked.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        return None, [(None, "cannot read the job file: %s" % error.strerror)]

    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    problems = []
    lines = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            problems.append((lineno, (
                "the line is not valid UTF-8 (byte 0x%02x at column %d): "
                "save the job file as UTF-8" % (raw[error.start], error.start + 1))))
            lines.append(raw.decode("utf-8", errors="replace"))
    return "\n".join(lines), problems


def _missing_section(sections):
    found = [name for name in sections if name != DEFAULT_SECTION]
    message = ("section [%s] is missing: put a [%s] line above the job's keys"
               % (SECTION, SECTION))
    if found:
        message += " (the file has %s)" % ", ".join("[%s]" % name for name in found)
    return message


def _builtin_values(path):
    """Return the names that every job file can use, escaped for interpolate."""
    absolute = os.path.abspath(path)
    values = {
        "job_name": os.path.splitext(os.path.basename(path))[0],
        "service_name": SECTION,
        "host_name": socket.gethostname(),
        "config_dir": os.path.dirname(absolute),
        "config_file": absolute,
    }
    escaped = {name: value.replace("%", "%%") for name, value in values.items()}
    # The manual gives the default of pgq_consumer_id as %(job_name)s.
    escaped["pgq_consumer_id"] = "%(job_name)s"
    return escaped


def _resolve(path, settings, problems):
    """Interpolate and parse every known key. Append problems to PROBLEMS.

    Return ({key: value}, names used by references).
    """
    raw = _builtin_values(path)
    raw.update((key, setting.value) for key, setting in settings.items())
    values = {}
    referenced = set()
    derived_problems = []
    for key, spec in KEYS.items():
        setting = settings.get(key)
        line = setting.lineno if setting else None
        if key not in raw:
            if spec.default is REQUIRED:
                problems.append((None, "[%s] %s is missing: set it to %s"
                                 % (SECTION, key, spec.hint)))
            values[key] = spec.default
            continue

        try:
            text = interpolate(key, raw, referenced)
            values[key] = _parse_value(key, spec, setting, text)
        except (InterpolationError, _Invalid) as error:
            if setting is None:
                derived_problems.append((line, _key_problem(key, error)))
            else:
                problems.append((line, _key_problem(key, error)))

    # A value that the file does not set comes from another key, such as
    # pgq_consumer_id from job_name, and that key reports the problem.
    if not problems:
        problems.extend(derived_problems)
    return values, referenced


def _key_problem(key, error):
    if isinstance(error, InterpolationError):
        return "[%s] %s: %s" % (SECTION, key, error)
    return "[%s] %s" % (SECTION, error)


def _parse_value(key, spec, setting, text):
    """Return TEXT parsed for KEY. Raise _Invalid with the whole message.

    A value that comes from a default or from another key (SETTING is None)
    may span lines only when that key's own value does, which is reported
    for that key.
    """
    if spec.one_line and setting is not None and "\n" in text:
        if setting.quoted or setting.continued_at is None:
            raise _Invalid("%s spans several lines: write it on one line" % key)
        raise _Invalid(
            "%s continues on line %d, because that line is indented deeper "
            "than the key: remove the indentation" % (key, setting.continued_at))
    try:
        return spec.parse(text)
    except _Invalid as error:
        if spec.secret:
            raise _Invalid("%s is invalid: expected %s" % (key, error)) from None
        message = "%s = %r is invalid: expected %s" % (key, text, error)
        if re.search(r"\s[#;]", text):
            message += (" (a '#' or ';' after a value is part of the value: "
                        "put the comment on a line of its own)")
        raise _Invalid(message) from None


def _section_warnings(sections):
    return [
        (None, "section [%s] is ignored: cubemux reads only [%s] and [%s]"
         % (name, SECTION, DEFAULT_SECTION))
        for name in sections
        if name not in (SECTION, DEFAULT_SECTION)
    ]


def _key_warnings(section, referenced):
    known = set(KEYS) | set(BUILTIN_NAMES) | _IGNORED_SKYTOOLS_KEYS | referenced
    warnings = []
    for key, setting in section.items():
        if key in known:
            continue
        message = "[%s] key %s is unknown and ignored" % (SECTION, key)
        close = difflib.get_close_matches(key, list(KEYS), n=1)
        if close:
            message += ": did you mean %s?" % close[0]
        warnings.append((setting.lineno, message))
    return warnings


def _template_warnings(mode, template):
    if mode != "keep_all":
        return []
    warnings = []
    if _UNIQUE_CONSTRAINT.search(template):
        warnings.append((None, (
            "[%s] part_template adds a primary key or unique constraint, "
            "which rejects the second version of a row under mode = keep_all: "
            "remove it from the template or set mode = keep_latest" % SECTION)))
    if _COPIED_INDEXES.search(template):
        warnings.append((None, (
            "[%s] part_template copies the parent's indexes (including all "
            "or including indexes), so a primary key or unique index of the "
            "parent rejects the second version of a row under mode = "
            "keep_all: copy only defaults, or set mode = keep_latest" % SECTION)))
    return warnings


def job_files(directory):
    """Return the job files of DIRECTORY in name order.

    A job file is an entry whose name ends in ``.ini`` and does not start
    with a dot, so hidden files and editor leftovers (``x.ini~``,
    ``.x.ini.swp``) are skipped. Folders are skipped, but a broken symbolic
    link is returned so that loading it reports the problem.
    """
    names = sorted(os.listdir(directory))
    return [
        os.path.join(directory, name)
        for name in names
        if name.endswith(".ini") and not name.startswith(".")
        and not os.path.isdir(os.path.join(directory, name))
    ]
