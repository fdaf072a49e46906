"""Prometheus metrics of the master, built from its job records at scrape time.

Workers send their figures to the master in reports (cubemux.reports). The
master adds them up per job in a JobSlot, which outlives worker restarts, so
the counters keep counting when a worker is replaced. JobCollector turns a
copy of every job record into metric families each time /metrics is read.
No worker writes metrics itself, and no per-process files are kept.

Every series has a ``job`` label. The other labels take bounded values:
``op`` one of insert, update, delete; ``state`` one of cubemux.states.ALL;
``kind`` one of ERROR_KINDS; ``table`` a parent table, as ``schema.table``,
that received rows; ``queue`` the job's PgQ queue. Connection strings never
become labels.
"""

import bisect
import dataclasses
import logging
import os
import time

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from cubemux import errors, states

log = logging.getLogger(__name__)

# Upper bounds (seconds) of the batch duration histogram's buckets. A batch
# takes from a few milliseconds (an idle tick) to many minutes (the first
# batch after the ticker was down for an hour).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

# The kinds of cubemux_errors_total. The first four come from a worker's
# exit code, "timeout" from the master killing a worker.
ERROR_CONFIG = "config"
ERROR_LOST_POSITION = "lost_position"
ERROR_BAD_EVENT = "bad_event"
ERROR_CRASH = "crash"
ERROR_TIMEOUT = "timeout"
ERROR_KINDS = (ERROR_CONFIG, ERROR_LOST_POSITION, ERROR_BAD_EVENT, ERROR_CRASH,
               ERROR_TIMEOUT)

_EXIT_CODE_KINDS = {
    errors.EXIT_CONFIG: ERROR_CONFIG,
    errors.EXIT_LOST_POSITION: ERROR_LOST_POSITION,
    errors.EXIT_BAD_EVENT: ERROR_BAD_EVENT,
}

# Event operations in reports, and their value of the ``op`` label.
OPERATIONS = {"I": "insert", "U": "update", "D": "delete"}

# The fields of a worker's "queue" report (cubemux.pgq.queue_figures).
QUEUE_FIGURES = ("consumer_lag_seconds", "pending_events", "last_seen_seconds",
                 "ticker_lag_seconds")


def exit_error_kind(exit_code):
    """Return the error kind of a worker's exit code, or None for a clean exit.

    EXIT_CODE follows os.waitstatus_to_exitcode(): negative for a signal.
    A death by signal and any code that no error class uses count as crash.
    """
    if exit_code == errors.EXIT_OK:
        return None
    return _EXIT_CODE_KINDS.get(exit_code, ERROR_CRASH)


class DurationHistogram:
    """Bucket counts and sum of batch durations, kept by the master per job.

    ``counts[i]`` is the number of observations in bucket i alone, the last
    one being +Inf. The exported buckets are cumulative.
    """

    def __init__(self, bounds=DURATION_BUCKETS):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds):
        # Prometheus buckets are "less than or equal", so a value equal to a
        # bound belongs to that bound's bucket.
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def cumulative(self):
        """Return [(le, count)] with cumulative counts, ending with +Inf."""
        counts = tuple(self.counts)
        buckets = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), counts):
            total += count
            buckets.append((_format_bound(bound), total))
        return buckets


def _format_bound(bound):
    if bound == float("inf"):
        return "+Inf"
    return repr(float(bound))


@dataclasses.dataclass(frozen=True)
class JobView:
    """A copy of what the master knows of one job, taken for one scrape."""

    name: str
    path: str
    queue: str | None
    state: str
    pid: int | None
    restarts: int
    batches: int
    skipped_batches: int
    events: dict
    inserted: dict
    deleted: dict
    partitions_created: int
    duration_buckets: tuple
    duration_sum: float
    errors: dict
    queue_figures: dict | None
    batch_open_since: float | None
    last_batch_time: float | None

    @property
    def running(self):
        return self.state == states.RUNNING


def view_of(slot):
    """Copy the figures of one JobSlot into a JobView."""
    totals = slot.totals
    durations = slot.batch_durations
    return JobView(
        name=slot.name,
        path=slot.path,
        queue=slot.job.pgq_queue_name if slot.job is not None else None,
        state=slot.state,
        pid=slot.pid,
        restarts=slot.restarts,
        batches=totals["batches"],
        skipped_batches=totals["skipped"],
        events=dict(totals["events"]),
        inserted=dict(totals["inserted"]),
        deleted=dict(totals["deleted"]),
        partitions_created=totals["partitions_created"],
        duration_buckets=tuple(durations.cumulative()),
        duration_sum=durations.sum,
        errors=dict(slot.errors),
        queue_figures=dict(slot.queue_figures) if slot.queue_figures else None,
        batch_open_since=slot.batch_open_since,
        last_batch_time=slot.last_batch_time,
    )


def read_jobs(master):
    """Return a JobView of every job of MASTER, ordered by job file.

    This runs in the HTTP server's thread while the master's loop changes
    the slots. list() of a dict's values and dict() of a dict are single C
    calls under the GIL, so each copy is whole, though two copies may be a
    report apart.
    """
    slots = list(master.slots.values())
    slots.sort(key=lambda slot: slot.path)
    return [view_of(slot) for slot in slots]


def job_labels(views):
    """Return the ``job`` label value of each view, unique across VIEWS.

    Two job files may set the same job_name. The first file (in name order)
    keeps the name, and each later one gets ``name@file.ini``, so their
    series never merge.
    """
    seen = set()
    labels = []
    for view in views:
        label = view.name
        if label in seen:
            label = "%s@%s" % (view.name, os.path.basename(view.path))
        seen.add(label)
        labels.append(label)
    return labels


class JobCollector:
    """A prometheus_client collector of every job's figures.

    READ_JOBS is a callable that returns a list of JobView; CLOCK returns the
    wall-clock time, in seconds since the epoch.
    """

    def __init__(self, read_jobs, clock=time.time):
        self.read_jobs = read_jobs
        self.clock = clock

    def collect(self):
        views = self.read_jobs()
        labels = job_labels(views)
        now = self.clock()
        families = _new_families()
        for job, view in zip(labels, views):
            _add_counters(families, job, view)
            _add_gauges(families, job, view, now)
        return list(families.values())


def _new_families():
    counters = [
        ("cubemux_batches", "Batches finished, applied or skipped.", []),
        ("cubemux_batches_skipped", "Batches skipped because the destination "
         "already had their tick.", []),
        ("cubemux_events", "Events applied, by operation.", ["op"]),
        ("cubemux_rows_inserted", "Rows inserted into the partitions of a "
         "parent table.", ["table"]),
        ("cubemux_rows_deleted", "Rows deleted from the partitions of a "
         "parent table.", ["table"]),
        ("cubemux_partitions_created", "Partitions created from part_template.", []),
        ("cubemux_worker_restarts", "Restarts of the job's worker after it "
         "exited unexpectedly.", []),
        ("cubemux_errors", "Errors, by kind: " + ", ".join(ERROR_KINDS) + ".",
         ["kind"]),
    ]
    gauges = [
        ("cubemux_consumer_lag_seconds", "Age of the last tick that the "
         "consumer finished, from pgq.get_consumer_info().", []),
        ("cubemux_pending_events", "Events in ticks that the consumer has not "
         "finished, an estimate from pgq.get_consumer_info().", []),
        ("cubemux_ticker_lag_seconds", "Age of the queue's last tick, from "
         "pgq.get_queue_info().", ["queue"]),
        ("cubemux_batch_open_seconds", "Age of the batch in progress, 0 when "
         "none is open.", []),
        ("cubemux_last_batch_timestamp_seconds", "Time the last batch finished, "
         "in seconds since the epoch.", []),
        ("cubemux_worker_up", "1 while the job's worker is connected and "
         "registered, else 0.", []),
        ("cubemux_job_state", "1 for the job's current state, 0 for the others.",
         ["state"]),
    ]
    families = {}
    for name, documentation, labels in counters:
        families[name] = CounterMetricFamily(name, documentation,
                                             labels=["job", *labels])
    families["cubemux_batch_duration_seconds"] = HistogramMetricFamily(
        "cubemux_batch_duration_seconds", "Time to apply one batch, from "
        "opening it to finishing it on the queue.", labels=["job"])
    for name, documentation, labels in gauges:
        families[name] = GaugeMetricFamily(name, documentation,
                                           labels=["job", *labels])
    return families


def _add_counters(families, job, view):
    families["cubemux_batches"].add_metric([job], view.batches)
    families["cubemux_batches_skipped"].add_metric([job], view.skipped_batches)
    for letter, op in OPERATIONS.items():
        families["cubemux_events"].add_metric([job, op], view.events.get(letter, 0))
    for table, count in sorted(view.inserted.items()):
        families["cubemux_rows_inserted"].add_metric([job, table], count)
    for table, count in sorted(view.deleted.items()):
        families["cubemux_rows_deleted"].add_metric([job, table], count)
    families["cubemux_partitions_created"].add_metric([job], view.partitions_created)
    families["cubemux_worker_restarts"].add_metric([job], view.restarts)
    for kind in ERROR_KINDS:
        families["cubemux_errors"].add_metric([job, kind], view.errors.get(kind, 0))
    families["cubemux_batch_duration_seconds"].add_metric(
        [job], list(view.duration_buckets), view.duration_sum)


def _add_gauges(families, job, view, now):
    # A worker reads the queue figures between batches. They are shown only
    # while a worker runs, because an old worker's figures stop changing.
    figures = view.queue_figures if view.pid is not None else None
    if figures:
        for key, name in (("consumer_lag_seconds", "cubemux_consumer_lag_seconds"),
                          ("pending_events", "cubemux_pending_events")):
            if figures.get(key) is not None:
                families[name].add_metric([job], figures[key])
        if figures.get("ticker_lag_seconds") is not None:
            families["cubemux_ticker_lag_seconds"].add_metric(
                [job, view.queue], figures["ticker_lag_seconds"])

    open_seconds = 0.0
    if view.pid is not None and view.batch_open_since is not None:
        open_seconds = max(0.0, now - view.batch_open_since)
    families["cubemux_batch_open_seconds"].add_metric([job], open_seconds)
    if view.last_batch_time is not None:
        families["cubemux_last_batch_timestamp_seconds"].add_metric(
            [job], view.last_batch_time)
    families["cubemux_worker_up"].add_metric([job], 1.0 if view.running else 0.0)
    for state in states.ALL:
        families["cubemux_job_state"].add_metric(
            [job, state], 1.0 if view.state == state else 0.0)


def health(views, now):
    """Return (healthy, body) for /healthz: healthy when every job runs.

    BODY is a JSON-ready dict with one entry per job. It holds no
    connection string.
    """
    jobs = []
    for job, view in zip(job_labels(views), views):
        entry = {
            "job": job,
            "file": view.path,
            "state": view.state,
            "pid": view.pid,
            "restarts": view.restarts,
            "batches": view.batches,
            "last_batch_age_seconds": None,
            "batch_open_seconds": None,
        }
        if view.last_batch_time is not None:
            entry["last_batch_age_seconds"] = round(max(0.0, now - view.last_batch_time), 3)
        if view.pid is not None and view.batch_open_since is not None:
            entry["batch_open_seconds"] = round(max(0.0, now - view.batch_open_since), 3)
        jobs.append(entry)
    healthy = all(view.running for view in views)
    return healthy, {"status": "ok" if healthy else "unhealthy", "jobs": jobs}
