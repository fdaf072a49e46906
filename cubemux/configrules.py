"""Checks between the keys of a job file, once each key is valid on its own.

configobj validates one key at a time, so the rules that tie keys together
live here. They check period against dateformat, and the dateformat that
part_mode, retention_period and the _PART_START and _PART_END placeholders
need. They also warn about keys that have no effect with the others as set.
"""

import dataclasses
import datetime

from cubemux import timing
from cubemux.errors import ConfigError
from cubemux.partitions import uses_bounds

# A time that is on no period boundary, so that a suffix read back from a
# format that lacks a field (a quarter, a 12-hour clock) differs from it.
_SAMPLE_TIME = datetime.datetime(2024, 11, 28, 13, 45, 30)

_BOUND_KEYS = ("part_template", "pre_part", "post_part")


@dataclasses.dataclass
class Findings:
    """Problems and warnings as lists of (line number or None, message).

    A message names its keys but not the section.
    """

    problems: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)


def check(values, settings):
    """Check VALUES, the valid value of every key, against each other.

    SETTINGS maps each key that the file sets to its iniformat.Setting, for
    line numbers. Return Findings.
    """
    findings = Findings()
    rules = _Rules(values, settings, findings)
    rules.check_period()
    rules.check_part_mode()
    rules.check_zone()
    rules.check_retention()
    rules.check_bound_placeholders()
    rules.check_columns()
    rules.check_event_types()
    return findings


def dateformat(values):
    """Return the dateformat in force: the period's format when period is set."""
    if values["period"] is not None:
        return timing.PERIOD_FORMATS[values["period"]]
    return values["dateformat"]


class _Rules:
    def __init__(self, values, settings, findings):
        self.values = values
        self.settings = settings
        self.findings = findings
        self.dateformat = dateformat(values)

    def line(self, key):
        setting = self.settings.get(key)
        return setting.lineno if setting else None

    def problem(self, key, message):
        self.findings.problems.append((self.line(key), message))

    def warning(self, key, message):
        self.findings.warnings.append((self.line(key), message))

    def check_period(self):
        period = self.values["period"]
        if period is not None and "dateformat" in self.settings:
            self.problem("dateformat", (
                "dateformat = %r and period = %s are both set, but period sets "
                "the dateformat to %s: keep only one of the two lines"
                % (self.values["dateformat"], period, self.dateformat)))

    def check_part_mode(self):
        mode = self.values["part_mode"]
        if mode != "batch_time":
            if not self.dateformat:
                self.warning("part_mode", (
                    "part_mode = %s has no effect because dateformat is empty, "
                    "so every row goes into its parent table: set a dateformat "
                    "or period, or remove part_mode" % mode))
            else:
                try:
                    timing.SuffixFormat(self.dateformat)
                except ConfigError as error:
                    self.problem("dateformat", str(error))

        if mode == "date_field" and self.values["part_field"] is None:
            self.problem("part_mode", (
                "part_mode = date_field needs part_field: set part_field to the "
                "date or timestamp column that places each row"))
        if mode != "date_field" and "part_field" in self.settings:
            self.warning("part_field", (
                "part_field is ignored because part_mode is %s: remove it, or "
                "set part_mode = date_field" % mode))

    def check_zone(self):
        """Check that zoneinfo finds the timezone if cubemux computes partition times.

        The source server checks the zone for batch_time suffixes, and it
        accepts names that zoneinfo does not find, such as POSIX rules.
        """
        zone = self.values["timezone"]
        if zone is None:
            return
        if self.values["part_mode"] != "batch_time":
            user = "part_mode = %s" % self.values["part_mode"]
        elif self.values["retention_period"] is not None:
            user = "retention_period"
        elif any(uses_bounds(self.values[key]) for key in _BOUND_KEYS):
            user = "_PART_START or _PART_END"
        else:
            return
        try:
            timing.load_zone(zone)
        except ConfigError:
            self.problem("timezone", (
                "timezone = %r is not found in Python's time zone database "
                "(zoneinfo), which %s needs because cubemux computes partition "
                "times itself: use a name such as 'UTC' or 'Europe/Tallinn'"
                % (zone, user)))

    def check_retention(self):
        retention = self.values["retention_period"]
        if retention is None:
            if "retention_action" in self.settings:
                self._warn_without_retention("retention_action")
            if self.values["ignore_old_events"]:
                self._warn_without_retention("ignore_old_events")
            return

        try:
            suffix = timing.SuffixFormat(self.dateformat)
            start = suffix.parse(suffix.format(_SAMPLE_TIME))
        except ConfigError:
            start = None
        if start is None:
            self.problem("retention_period", (
                "retention_period = %r needs partition names that cubemux can "
                "read back into a date, but dateformat = %r cannot be read back: "
                "set period, or a dateformat made of YYYY, MM, DD, HH24, MI and "
                "SS fields that includes YYYY, such as YYYY_MM_DD"
                % (str(retention), self.dateformat)))

    def _warn_without_retention(self, key):
        self.warning(key, "%s is ignored because retention_period is not set: "
                     "set retention_period, or remove %s" % (key, key))

    def check_bound_placeholders(self):
        users = [key for key in _BOUND_KEYS if uses_bounds(self.values[key])]
        if not users or self.values["period"] is not None:
            return
        try:
            unit = timing.SuffixFormat(self.dateformat).unit()
        except ConfigError:
            unit = None
        if unit is not None:
            return
        for key in users:
            self.problem(key, (
                "%s uses _PART_START or _PART_END, which need the partition's "
                "period, but dateformat = %r names none that cubemux can "
                "compute: set period, or a dateformat made of YYYY, Q, MM, DD, "
                "HH24, MI or SS fields such as YYYY_MM_DD" % (key, self.dateformat)))

    def check_columns(self):
        fields = self.values["fields"]
        skipped = self.values["skip_fields"]
        if fields is None or not skipped:
            return
        sources = {source for source, _ in fields}
        both = [name for name in skipped if name in sources]
        if both:
            self.problem("skip_fields", (
                "skip_fields lists %s, which fields also lists: remove it from "
                "one of the two" % ", ".join(both)))
        else:
            self.warning("skip_fields", (
                "skip_fields has no effect because fields lists every column "
                "to copy: remove skip_fields"))

    def check_event_types(self):
        if (self.values["mode"] == "keep_all" and "D" in self.values["event_types"]
                and "event_types" in self.settings):
            self.warning("event_types", (
                "event_types lists D, but mode = keep_all keeps every version "
                "and cannot apply a delete, so a D event stops the job: remove "
                "D from event_types, or set mode = keep_latest"))
