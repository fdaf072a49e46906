"""Load and validate cube_dispatcher job files.

A job file is an ini file (syntax in cubemux.iniformat) whose
``[cube_dispatcher]`` section contains the job's keys. The keys, their
defaults and the names that ``%(name)s`` can use without setting them
follow skytools: ``job_name`` (the file name without its extension),
``service_name``, ``host_name``, ``config_dir`` and ``config_file``.
cubemux.configspec lists every key with its check and default, and marks
the keys that cubemux adds.
"""

import dataclasses
import difflib
import os
import re
import socket

from cubemux import configrules, configspec
from cubemux.configspec import RetentionPeriod
from cubemux.errors import ConfigError
from cubemux.iniformat import (
    DEFAULT_SECTION, InterpolationError, interpolate, parse_ini)

SECTION = "cube_dispatcher"

KEYS = configspec.keys()

_UNIQUE_CONSTRAINT = re.compile(r"\b(primary\s+key|unique)\b", re.IGNORECASE)
_COPIED_INDEXES = re.compile(r"\bincluding\s+(all|indexes)\b", re.IGNORECASE)

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
    """One validated job file. The fields after path are the keys of CONFIGSPEC."""

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
    part_mode: str
    part_field: str | None
    # The unit of each partition (hour, day, month or year), or None when
    # only dateformat names the partitions.
    period: str | None
    pre_part: str
    post_part: str
    retention_period: RetentionPeriod | None
    retention_action: str
    ignore_old_events: bool
    # (source column, destination column) pairs, or None to copy every column.
    fields: tuple | None
    skip_fields: tuple
    # ((source schema, source table), (destination schema, parent table)) pairs.
    table_map: tuple
    event_types: tuple
    on_truncate: str
    on_new_column: str
    on_error: str
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
    keys and sections, a template that does not fit the mode, keys that have
    no effect) go into JobConfig.warnings. The checks between keys run once
    each key is valid on its own.
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

    findings = configrules.check(values, settings)
    problems += _in_section(findings.problems)
    warnings += _in_section(findings.warnings)
    if problems:
        raise ConfigError(_located(path, problems))

    values["dateformat"] = configrules.dateformat(values)
    values["part_template"] = (values["part_template"]
                               or default_template(values["mode"]))
    warnings += _template_warnings(values["mode"], values["part_template"])
    return JobConfig(path=os.path.abspath(path),
                     warnings=tuple(_located(path, warnings)), **values)


def _in_section(items):
    return [(line, "[%s] %s" % (SECTION, message)) for line, message in items]


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
    """Interpolate every key of CONFIGSPEC and validate it. Append problems to PROBLEMS.

    Return ({key: value}, names used by references). The values include
    the defaults of unset keys.
    """
    raw = _builtin_values(path)
    raw.update((key, setting.value) for key, setting in settings.items())
    texts = {}
    referenced = set()
    derived_problems = []
    reported = set()

    def report(key, message):
        reported.add(key)
        if key in settings:
            problems.append((settings[key].lineno, message))
        else:
            derived_problems.append((None, message))

    for key in KEYS:
        if key not in raw:
            continue
        try:
            texts[key] = interpolate(key, raw, referenced)
        except InterpolationError as error:
            report(key, "[%s] %s: %s" % (SECTION, key, error))
            continue
        spread = _spread_problem(key, settings.get(key), texts[key])
        if spread:
            report(key, "[%s] %s" % (SECTION, spread))

    values, errors = configspec.validate_values(texts)
    for key in KEYS:
        if key not in errors or key in reported:
            continue
        if errors[key] is None:
            problems.append((None, "[%s] %s is missing: set it to %s" % (
                SECTION, key, configspec.REQUIRED_HINTS.get(key, "a value"))))
        else:
            report(key, _invalid_message(key, texts[key], errors[key]))

    # A value that the file does not set comes from another key, such as
    # pgq_consumer_id from job_name, and that key reports the problem.
    if not problems:
        problems.extend(derived_problems)
    return values, referenced


def _spread_problem(key, setting, text):
    """Return why TEXT may not span lines, or None when it may.

    A value that comes from a default or from another key (SETTING is None)
    may span lines only when that key's own value does, which is reported
    for that key.
    """
    if key in configspec.MULTILINE_KEYS or setting is None or "\n" not in text:
        return None
    if setting.quoted or setting.continued_at is None:
        return "%s spans several lines: write it on one line" % key
    return ("%s continues on line %d, because that line is indented deeper "
            "than the key: remove the indentation" % (key, setting.continued_at))


def _invalid_message(key, text, error):
    """Return the message for TEXT of KEY, which failed its check with ERROR."""
    if isinstance(error, configspec.Invalid):
        expected = "expected %s" % error
    else:
        expected = str(error)
    if key in configspec.SECRET_KEYS:
        return "[%s] %s is invalid: %s" % (SECTION, key, expected)
    message = "[%s] %s = %r is invalid: %s" % (SECTION, key, text, expected)
    if re.search(r"\s[#;]", text):
        message += (" (a '#' or ';' after a value is part of the value: "
                    "put the comment on a line of its own)")
    return message


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
