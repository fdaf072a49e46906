"""Routing of decoded events: which events apply, and into which partition.

A Router combines the job's mapping keys (event_types, table_map, fields,
skip_fields), its partition naming (part_mode, dateformat or period,
timezone) and ignore_old_events for one batch at a time.
"""

import datetime
import logging

from cubemux import retention, timing
from cubemux.errors import ConfigError
from cubemux.mapping import FieldMap
from cubemux.naming import Naming
from cubemux.partitions import partition_name, uses_bounds

log = logging.getLogger(__name__)

SKIP = None


def partition_zone(job, server_zone):
    """Return the tzinfo in which partition boundaries fall for JOB.

    The job's timezone key wins. Without it, the source server's zone is
    used, as cube_dispatcher formatted batch times on the source server.
    """
    if job.timezone:
        return timing.load_zone(job.timezone)
    try:
        return timing.load_zone(server_zone)
    except ConfigError:
        log.warning("the source server's time zone %r is unknown to Python; "
                    "partition bounds use UTC: set timezone in the job file",
                    server_zone)
        return datetime.timezone.utc


class Router:
    """Decides, for each event of a batch, whether and where it is applied."""

    def __init__(self, job, zone, partitioner):
        self.job = job
        self.fields = FieldMap(job)
        self.naming = Naming(job, zone)
        self.per_event = self.naming.per_event
        # Whether route() needs each event's ev_time.
        self.uses_event_time = self.per_event and self.naming.mode == "event_time"
        self.partitioner = partitioner
        self.retention_period = job.retention_period
        self.ignore_old = bool(job.ignore_old_events and self.retention_period)
        templates = (job.part_template, job.pre_part, job.post_part)
        self.need_bounds = self.ignore_old or any(uses_bounds(t) for t in templates)
        self.parents = set()
        self._names = {}
        self.limit = None
        self.batch = None
        self.skipped = 0

    def start_batch(self, batch):
        """Prepare for BATCH: its suffix, and the retention limit of now."""
        self.batch = batch
        self.skipped = 0
        if self.ignore_old:
            self.limit = retention.cutoff(datetime.datetime.now(datetime.timezone.utc),
                                          self.retention_period, self.naming.zone)
        if self.ignore_old or len(self._names) > 10000:
            self._names.clear()

    def route(self, event, ev_time):
        """Map EVENT in place and return its partition name, or SKIP."""
        fields = self.fields
        if fields.filters_ops and event.op not in fields.event_types:
            self.skipped += 1
            return SKIP
        if fields.tables:
            event.schema, event.table = fields.destination(event.schema, event.table)
        if fields.changes_columns:
            fields.apply(event)

        if self.per_event:
            moment = self.naming.event_moment(event, ev_time)
            suffix = self.naming.suffix(moment)
        else:
            moment = self.batch.batch_end
            suffix = self.batch.suffix
        routed = self._names.get((event.schema, event.table, suffix))
        if routed is None:
            routed = self._new_partition(event, suffix, moment)
            self._names[(event.schema, event.table, suffix)] = routed
        name, old = routed
        if old:
            self.skipped += 1
            return SKIP
        return name

    def _new_partition(self, event, suffix, moment):
        name = partition_name(event.table, suffix)
        self.parents.add((event.schema, event.table))
        if not self.need_bounds or suffix is None:
            return name, False
        period = self.naming.bounds(moment)
        self.partitioner.note_period(event.schema, name, period)
        old = False
        if self.ignore_old and period is not None:
            old = period[1].replace(tzinfo=None) <= self.limit
            if old:
                log.info("skipping events for %s.%s: its period ended before the "
                         "retention window", event.schema, name)
        return name, old
