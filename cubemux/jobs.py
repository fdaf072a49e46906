"""The master's record of each job: its settings, its worker and its state."""

import dataclasses
import logging
import os
import time

from cubemux import config, metrics, reports, states
from cubemux.backoff import DEFAULT_CAP, Backoff
from cubemux.errors import ConfigError

log = logging.getLogger(__name__)

# A worker that has been running (connected and registered) this long, in
# seconds, starts the backoff again from 1 s when it exits.
HEALTHY_AFTER = 30.0

# Counts that a batch report carries, summed per job across worker restarts.
BATCH_COUNTERS = ("partitions_created", "events_skipped", "dead_letters",
                  "columns_added", "values_dropped")


@dataclasses.dataclass(frozen=True)
class JobStatus:
    """A copy of one job's record, published by the master for other threads.

    Times are wall-clock seconds since the epoch. The dict fields are copies,
    which are not changed after publication.
    """

    name: str
    path: str
    state: str
    state_since: float
    message: str
    pid: int | None
    started_at: float | None
    running_since: float | None
    restarts: int
    next_start_at: float | None
    last_report_at: float | None
    last_batch_time: float | None
    batch_open_since: float | None
    standby: bool
    queue: str | None
    queue_figures: dict | None
    totals: dict
    errors: dict
    # Cumulative [(le, count)] of metrics.DurationHistogram, and its sum.
    duration_buckets: tuple
    duration_sum: float

    def as_dict(self):
        return dataclasses.asdict(self)


def consumer_key(job):
    """Return the (queue, consumer) pair that at most one job may use."""
    return job.pgq_queue_name, job.pgq_consumer_id


def claim_consumer(job, path, owners):
    """Record that JOB of file PATH uses its consumer. Return an error or None.

    OWNERS maps what earlier jobs claimed to their files. A job may not use
    the queue and consumer of an earlier one, nor its consumer in the same
    dst_db: pgq_ext.completed_tick keeps one position per consumer, so two
    queues would overwrite each other's position there.
    """
    # NOTE: dst_db strings are compared as written, so two spellings of the
    # same database are not caught.
    queue_key = ("queue", job.pgq_queue_name, job.pgq_consumer_id)
    position_key = ("position", job.dst_db, job.pgq_consumer_id)
    if queue_key in owners:
        return ("%s: queue %s and consumer %s are already used by %s: set another "
                "pgq_consumer_id in this file or remove it"
                % (path, job.pgq_queue_name, job.pgq_consumer_id, owners[queue_key]))
    if position_key in owners:
        return ("%s: consumer %s already keeps its position in this dst_db for "
                "another queue, in %s: pgq_ext keeps one position per consumer, "
                "so set another pgq_consumer_id in this file"
                % (path, job.pgq_consumer_id, owners[position_key]))
    owners[queue_key] = path
    owners[position_key] = path
    return None


class JobSlot:
    """One job file and the worker that runs it.

    change_state() is the only writer of ``state``. Methods that measure
    time take NOW from the master's monotonic clock (SystemAPI.monotonic()).
    Wall-clock times, for status output only, come from time.time().
    """

    def __init__(self, path, job):
        self.path = path
        self.job = job

        # Settings to start with once the current worker has exited.
        self.pending_job = None
        self.removed = False

        self.state = states.STOPPED
        self.state_since = time.time()
        self.message = ""

        # The current worker, and the master's clock readings about it.
        self.pid = None
        self.report_fd = None
        self.report_rest = b""
        self.started_at = 0.0
        self.started_wall = None
        self.running_since = None
        self.last_beat = 0.0
        self.last_report_wall = None
        self.next_start = 0.0
        self.stop_requested_at = 0.0
        self.killed = False

        self.restarts = 0
        self.healthy_after = HEALTHY_AFTER
        self.backoff = Backoff(job.max_backoff if job else DEFAULT_CAP)

        # Figures from the workers' reports, kept across worker restarts.
        self.last_batch_time = None
        self.batch_open_since = None
        self.standby = False
        self.totals = {"batches": 0, "events": {}, "inserted": {}, "deleted": {},
                       "skipped": 0, "partitions_retired": {},
                       **dict.fromkeys(BATCH_COUNTERS, 0)}
        self.batch_durations = metrics.DurationHistogram()
        self.errors = {}
        self.queue_figures = None
        # What the current worker reported as the cause of its failure.
        self.failure = None
        self._totals_copy = (None, None)

    @property
    def name(self):
        if self.job is not None:
            return self.job.job_name
        return os.path.splitext(os.path.basename(self.path))[0]

    @property
    def log_extra(self):
        """The ``extra`` argument that puts the job name on a log record."""
        return {"job": self.name}

    def change_state(self, new_state, message):
        """Move to NEW_STATE and log MESSAGE, which starts with a verb."""
        old = self.state
        if new_state not in states.TRANSITIONS[old]:
            log.error("unexpected transition %s -> %s: %s", old, new_state, message,
                      extra=self.log_extra)
        self.state = new_state
        self.state_since = time.time()
        self.message = message
        if new_state == states.FATAL:
            level = logging.ERROR
        elif new_state == states.BACKOFF:
            level = logging.WARNING
        else:
            level = logging.INFO
        log.log(level, "%s (%s -> %s)", message, old, new_state, extra=self.log_extra)

    def worker_started(self, pid, read_fd, now):
        """Record a new worker process and its report pipe."""
        self.pid = pid
        self.report_fd = read_fd
        self.report_rest = b""
        self.started_at = now
        self.started_wall = time.time()
        self.running_since = None
        self.last_beat = now
        self.killed = False
        self.batch_open_since = None
        self.standby = False
        self.queue_figures = None
        self.failure = None

    def worker_gone(self, now):
        """Read the last reports of the exited worker and forget its process.

        Return how long, in seconds, the worker had been running, or None when
        it never reported that it started.
        """
        self.drain_reports(now)
        self.close_reports()
        healthy_for = None
        if self.running_since is not None:
            healthy_for = now - self.running_since
        self.pid = None
        self.started_wall = None
        self.running_since = None
        self.batch_open_since = None
        self.standby = False
        return healthy_for

    def read_reports(self, now):
        """Read and handle what the report pipe contains, without blocking.

        Return True when there may be more to read.
        """
        rest_before = self.report_rest
        messages, self.report_rest, closed = reports.read_reports(
            self.report_fd, self.report_rest)
        for message in messages:
            self.handle_report(message, now)
        if closed:
            self.close_reports()
        return not closed and (bool(messages) or self.report_rest != rest_before)

    def drain_reports(self, now):
        while self.report_fd is not None and self.read_reports(now):
            pass

    def close_reports(self):
        if self.report_fd is not None:
            os.close(self.report_fd)
            self.report_fd = None

    def handle_report(self, message, now):
        if not isinstance(message, dict):
            return
        self.last_beat = now
        self.last_report_wall = time.time()
        kind = message.get("kind")
        self.batch_open_since = message.get("batch_open_since", self.batch_open_since)
        if kind == "started" and self.state == states.STARTING:
            self.running_since = now
            self.change_state(states.RUNNING, "started: worker pid %s is connected "
                              "and registered" % self.pid)
        elif kind == "queue":
            self.queue_figures = {name: message.get(name)
                                  for name in metrics.QUEUE_FIGURES}
        elif kind == "standby":
            self.standby = bool(message.get("waiting"))
        elif kind == "batch":
            self.count_batch(message)
        elif kind == "error":
            self.failure = str(message.get("reason") or "")[:reports.MAX_REASON]
        elif kind == "retention":
            retired = self.totals["partitions_retired"]
            action = message.get("action")
            if action in ("drop", "detach"):
                retired[action] = retired.get(action, 0) + (message.get("count") or 0)

    def count_batch(self, message):
        self.batch_open_since = None
        self.last_batch_time = message.get("time")
        self.totals["batches"] += 1
        self.totals["skipped"] += 1 if message.get("skipped") else 0
        for name in BATCH_COUNTERS:
            self.totals[name] += message.get(name) or 0
        self.batch_durations.observe(message.get("seconds") or 0.0)
        for field in ("events", "inserted", "deleted"):
            bucket = self.totals[field]
            for key, count in (message.get(field) or {}).items():
                bucket[key] = bucket.get(key, 0) + count

    def count_error(self, kind):
        """Count one error of KIND (one of metrics.ERROR_KINDS) for this job."""
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def status(self, now):
        """Return a JobStatus copy of this record."""
        wall = time.time()
        next_start_at = None
        if self.state == states.BACKOFF:
            next_start_at = wall + max(0.0, self.next_start - now)
        running_since = None
        if self.running_since is not None:
            running_since = wall - (now - self.running_since)
        return JobStatus(
            name=self.name,
            path=self.path,
            state=self.state,
            state_since=self.state_since,
            message=self.message,
            pid=self.pid,
            started_at=self.started_wall,
            running_since=running_since,
            restarts=self.restarts,
            next_start_at=next_start_at,
            last_report_at=self.last_report_wall,
            last_batch_time=self.last_batch_time,
            batch_open_since=self.batch_open_since,
            standby=self.standby,
            queue=self.job.pgq_queue_name if self.job is not None else None,
            queue_figures=dict(self.queue_figures) if self.queue_figures else None,
            totals=self._copy_totals(),
            errors=dict(self.errors),
            duration_buckets=tuple(self.batch_durations.cumulative()),
            duration_sum=self.batch_durations.sum,
        )

    def _copy_totals(self):
        # The totals change only with a batch report, so the copy is reused
        # until the next one.
        batches, copy = self._totals_copy
        if batches != self.totals["batches"] or copy is None:
            copy = {key: dict(value) if isinstance(value, dict) else value
                    for key, value in self.totals.items()}
            self._totals_copy = (self.totals["batches"], copy)
        return copy


def scan_jobs(directory, slots):
    """Load the job files of DIRECTORY. Return {path: JobConfig or ConfigError}.

    Of two files that claim the same consumer (see claim_consumer), the second
    one is an error. A file whose running job already uses that pair comes first, so a
    file added later can never take over a running consumer. SLOTS is the
    master's {path: JobSlot}. Raise OSError when DIRECTORY cannot be listed.
    """
    loaded = {}
    for path in config.job_files(directory):
        try:
            loaded[path] = config.load_job(path)
        except ConfigError as error:
            loaded[path] = error

    def keeps_consumer(path):
        slot = slots.get(path)
        job = loaded[path]
        return (slot is not None and slot.job is not None and slot.pid is not None
                and not isinstance(job, ConfigError)
                and consumer_key(slot.job) == consumer_key(job))

    owners = {}
    for path in sorted(loaded, key=lambda path: (not keeps_consumer(path), path)):
        job = loaded[path]
        if isinstance(job, ConfigError):
            continue
        conflict = claim_consumer(job, path, owners)
        if conflict is not None:
            loaded[path] = ConfigError(conflict)
    return dict(sorted(loaded.items()))
