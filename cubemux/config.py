"""Load and validate cube_dispatcher job files.

A job file is an ini file with one ``[cube_dispatcher]`` section, read by
configobj and checked against CONFIGSPEC. The keys and defaults follow the
skytools 2 cube_dispatcher manual. Keys that cubemux adds are marked below.
"""

import dataclasses
import os
import re

import configobj
import validate

from cubemux.errors import ConfigError
from cubemux.iniformat import fold_continuation_lines

SECTION = "cube_dispatcher"

MODES = ("keep_latest", "keep_all")

CONFIGSPEC = """
[cube_dispatcher]
job_name = string(min=1, default=None)
src_db = string(min=1)
dst_db = string(min=1)
pgq_queue_name = string(min=1)
pgq_consumer_id = string(min=1, default=None)
mode = option('keep_latest', 'keep_all', default='keep_latest')
dateformat = string(default='YYYY_MM_DD')
part_template = string(default='')
loop_delay = float(min=0, default=1.0)
connection_lifetime = float(min=0, default=1200)
logfile = string(default=None)
pidfile = string(default=None)
log_count = integer(min=0, default=3)
log_size = integer(min=1, default=10485760)
use_skylog = boolean(default=False)

# Keys that cubemux adds.
timezone = string(min=1, default=None)
worker_timeout = float(min=1, default=60)
max_backoff = float(min=1, default=60)
""".splitlines()

# What each check of CONFIGSPEC accepts, for error messages.
_EXPECTED = {
    "mode": "one of %s" % ", ".join(MODES),
    "loop_delay": "a number of seconds, 0 or more",
    "connection_lifetime": "a number of seconds, 0 or more",
    "worker_timeout": "a number of seconds, 1 or more",
    "max_backoff": "a number of seconds, 1 or more",
    "log_count": "a whole number, 0 or more",
    "log_size": "a size in bytes, a whole number of 1 or more",
    "use_skylog": "a boolean: 1, 0, true, false, yes, no, on or off",
}

_REQUIRED_HINTS = {
    "src_db": "a libpq connection string of the source database, "
    "such as 'dbname=sourcedb'",
    "dst_db": "a libpq connection string of the destination database, "
    "such as 'dbname=dataminedb'",
    "pgq_queue_name": "the name of the PgQ queue to consume",
}

_KNOWN_KEYS = frozenset(
    re.match(r"\s*(\w+)", line).group(1)
    for line in CONFIGSPEC
    if "=" in line and not line.lstrip().startswith("#")
)

# Keys that skytools scripts accept and cubemux ignores without a warning.
_IGNORED_SKYTOOLS_KEYS = frozenset({
    "pgq_lazy_fetch", "pgq_autocommit", "exception_sleep", "use_syslog",
    "syslog_facility", "stats_period", "pgq_batch_collect_events",
    "pgq_batch_collect_interval", "pgq_keep_lag",
})

_UNIQUE_CONSTRAINT = re.compile(r"\b(primary\s+key|unique)\b", re.IGNORECASE)


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


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ConfigError("%s: cannot read the job file: %s" % (path, error.strerror))
    except UnicodeDecodeError as error:
        raise ConfigError("%s: the job file is not valid UTF-8: %s" % (path, error))
    try:
        folded = fold_continuation_lines(text)
    except ValueError as error:
        raise ConfigError("%s: %s" % (path, error))

    try:
        return configobj.ConfigObj(
            folded.splitlines(),
            configspec=CONFIGSPEC,
            interpolation="ConfigParser",
            list_values=False,
            encoding="utf-8",
            file_error=True,
        )
    except configobj.ConfigObjError as error:
        problems = ["%s: %s" % (path, err) for err in getattr(error, "errors", [])]
        raise ConfigError(problems or ["%s: %s" % (path, error)])


def _format_problem(path, key, error):
    place = "%s: [%s] %s" % (path, SECTION, key)
    if error is False:
        hint = _REQUIRED_HINTS.get(key, "a value")
        return "%s is missing: set it to %s" % (place, hint)
    value = getattr(error, "args", [None])[0]
    expected = _EXPECTED.get(key, "a non-empty string")
    shown = getattr(error, "value", None)
    if shown is None:
        shown = value
    return "%s = %r is invalid: expected %s" % (place, _value_of(error), expected)


def _value_of(error):
    """Return the rejected value that a validate error carries."""
    message = str(error)
    match = re.search(r'"(.*)"', message)
    return match.group(1) if match else message


def _template_warnings(path, mode, template):
    warnings = []
    if mode == "keep_all" and _UNIQUE_CONSTRAINT.search(template):
        warnings.append(
            "%s: [%s] part_template adds a primary key or unique constraint, "
            "which rejects the second version of a row under mode = keep_all; "
            "remove it from the template or set mode = keep_latest" % (path, SECTION)
        )
    return warnings


def default_template(mode):
    """Return the partition template used when part_template is empty."""
    create = "create table _DEST_TABLE (like _PARENT including defaults)"
    if mode == "keep_latest":
        return create + ";\nalter table only _DEST_TABLE add primary key (_PKEY)"
    return create


def load_job(path):
    """Load and validate one job file. Raise ConfigError listing every problem."""
    parsed = _read(path)
    if SECTION not in parsed:
        raise ConfigError(
            "%s: section [%s] is missing: put the job's keys under a "
            "[%s] line" % (path, SECTION, SECTION)
        )
    section = parsed[SECTION]
    if not section.get("job_name"):
        section["job_name"] = os.path.splitext(os.path.basename(path))[0]

    try:
        result = parsed.validate(validate.Validator(), preserve_errors=True)
    except configobj.InterpolationError as error:
        raise ConfigError("%s: [%s] %s" % (path, SECTION, error))
    problems = []
    if result is not True:
        for sections, key, error in configobj.flatten_errors(parsed, result):
            if key is None:
                problems.append("%s: section [%s] is missing" % (path, SECTION))
            else:
                problems.append(_format_problem(path, key, error))
    if problems:
        raise ConfigError(problems)

    return _build(path, parsed, section)


def _build(path, parsed, section):
    warnings = []
    for name in parsed:
        if name != SECTION:
            warnings.append("%s: section [%s] is ignored" % (path, name))
    for key in section:
        if key not in _KNOWN_KEYS and key not in _IGNORED_SKYTOOLS_KEYS:
            warnings.append("%s: [%s] key %s is unknown and ignored" % (path, SECTION, key))

    mode = section["mode"]
    template = section["part_template"].strip() or default_template(mode)
    warnings.extend(_template_warnings(path, mode, template))

    def expand(value):
        return os.path.expanduser(value) if value else None

    return JobConfig(
        path=os.path.abspath(path),
        job_name=section["job_name"],
        src_db=section["src_db"],
        dst_db=section["dst_db"],
        pgq_queue_name=section["pgq_queue_name"],
        pgq_consumer_id=section["pgq_consumer_id"] or section["job_name"],
        mode=mode,
        dateformat=section["dateformat"].strip(),
        part_template=template,
        loop_delay=section["loop_delay"],
        connection_lifetime=section["connection_lifetime"],
        logfile=expand(section["logfile"]),
        pidfile=expand(section["pidfile"]),
        log_count=section["log_count"],
        log_size=section["log_size"],
        use_skylog=section["use_skylog"],
        timezone=section["timezone"],
        worker_timeout=section["worker_timeout"],
        max_backoff=section["max_backoff"],
        warnings=tuple(warnings),
    )


def job_files(directory):
    """Return the job files of DIRECTORY in name order.

    Hidden files and editor leftovers are skipped: only ``*.ini`` files whose
    name does not start with a dot.
    """
    names = sorted(os.listdir(directory))
    return [
        os.path.join(directory, name)
        for name in names
        if name.endswith(".ini") and not name.startswith(".")
        and os.path.isfile(os.path.join(directory, name))
    ]
