"""Prometheus metrics of the master, built from its job records at scrape time.

Workers send their figures to the master in reports (cubemux.reports). The
master adds them up per job in a JobSlot, which outlives worker restarts, so
the counters keep counting when a worker is replaced. JobCollector turns the
master's published copy of every job (cubemux.jobs.JobStatus) into metric
families each time /metrics is read. No worker writes metrics itself, and no
per-process files are kept.

Every series has a ``job`` label. The other labels take bounded values:

- ``op``: insert, update or delete.
- ``state``: one of cubemux.states.ALL.
- ``kind``: one of ERROR_KINDS.
- ``table``: a parent table that received rows, as ``schema.table``.
- ``queue``: the job's PgQ queue.

No label contains a connection string.
"""

import bisect
import os
import time

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from cubemux import errors, states

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
        buckets = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            total += count
            buckets.append((_format_bound(bound), total))
        return buckets


def _format_bound(bound):
    if bound == float("inf"):
        return "+Inf"
    return repr(float(bound))


def read_jobs(master):
    """Return the JobStatus of every job of MASTER, ordered by job file.

    The master replaces its ``snapshot`` tuple as a whole once per pass of
    its loop, so any thread can read it without a lock.
    """
    return list(master.snapshot)


def job_labels(jobs):
    """Return the ``job`` label value of each JobStatus, unique across JOBS.

    Two job files may set the same job_name. The first file (in name order)
    keeps the name, and each later one gets ``name@file.ini``, so their
    series never merge.
    """
    seen = set()
    labels = []
    for job in jobs:
        label = job.name
        if label in seen:
            label = "%s@%s" % (job.name, os.path.basename(job.path))
        seen.add(label)
        labels.append(label)
    return labels


class JobCollector:
    """A prometheus_client collector of every job's figures.

    READ_JOBS is a callable that returns a list of cubemux.jobs.JobStatus.
    CLOCK returns the wall-clock time, in seconds since the epoch.
    """

    def __init__(self, read_jobs, clock=time.time):
        self.read_jobs = read_jobs
        self.clock = clock

    def collect(self):
        jobs = self.read_jobs()
        now = self.clock()
        families = _new_families()
        for label, job in zip(job_labels(jobs), jobs):
            _add_counters(families, label, job)
            _add_gauges(families, label, job, now)
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
        ("cubemux_partitions_retired", "Expired partitions that retention_period "
         "dropped or detached, by action.", ["action"]),
        ("cubemux_events_skipped", "Events not applied because of event_types or "
         "ignore_old_events, or ignored truncate events.", []),
        ("cubemux_dead_letters", "Bad events stored in cubemux.deadletter "
         "(on_error = deadletter).", []),
        ("cubemux_columns_added", "Columns added to destination tables "
         "(on_new_column = add).", []),
        ("cubemux_values_dropped", "Values of columns the destination lacks, "
         "dropped (on_new_column = ignore).", []),
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
        ("cubemux_worker_standby", "1 while the job's worker waits because "
         "another worker applies the same queue and consumer, else 0.", []),
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


def _add_counters(families, label, job):
    totals = job.totals
    families["cubemux_batches"].add_metric([label], totals["batches"])
    families["cubemux_batches_skipped"].add_metric([label], totals["skipped"])
    for letter, op in OPERATIONS.items():
        families["cubemux_events"].add_metric(
            [label, op], totals["events"].get(letter, 0))
    for table, count in sorted(totals["inserted"].items()):
        families["cubemux_rows_inserted"].add_metric([label, table], count)
    for table, count in sorted(totals["deleted"].items()):
        families["cubemux_rows_deleted"].add_metric([label, table], count)
    families["cubemux_partitions_created"].add_metric(
        [label], totals["partitions_created"])
    for action in ("drop", "detach"):
        families["cubemux_partitions_retired"].add_metric(
            [label, action], totals["partitions_retired"].get(action, 0))
    for name in ("events_skipped", "dead_letters", "columns_added", "values_dropped"):
        families["cubemux_" + name].add_metric([label], totals[name])
    families["cubemux_worker_restarts"].add_metric([label], job.restarts)
    for kind in ERROR_KINDS:
        families["cubemux_errors"].add_metric([label, kind], job.errors.get(kind, 0))
    families["cubemux_batch_duration_seconds"].add_metric(
        [label], list(job.duration_buckets), job.duration_sum)


def _add_gauges(families, label, job, now):
    # A worker reads the queue figures between batches. They are shown only
    # while a worker runs, because an old worker's figures stop changing.
    figures = job.queue_figures if job.pid is not None else None
    if figures:
        for key, name in (("consumer_lag_seconds", "cubemux_consumer_lag_seconds"),
                          ("pending_events", "cubemux_pending_events")):
            if figures.get(key) is not None:
                families[name].add_metric([label], figures[key])
        if figures.get("ticker_lag_seconds") is not None:
            families["cubemux_ticker_lag_seconds"].add_metric(
                [label, job.queue], figures["ticker_lag_seconds"])

    families["cubemux_batch_open_seconds"].add_metric(
        [label], batch_open_seconds(job, now) or 0.0)
    if job.last_batch_time is not None:
        families["cubemux_last_batch_timestamp_seconds"].add_metric(
            [label], job.last_batch_time)
    running = job.state == states.RUNNING
    families["cubemux_worker_up"].add_metric([label], 1.0 if running else 0.0)
    families["cubemux_worker_standby"].add_metric(
        [label], 1.0 if running and job.standby else 0.0)
    for state in states.ALL:
        families["cubemux_job_state"].add_metric(
            [label, state], 1.0 if job.state == state else 0.0)


def batch_open_seconds(job, now):
    """Return the age of JOB's open batch at wall-clock time NOW, or None."""
    if job.pid is None or job.batch_open_since is None:
        return None
    return max(0.0, now - job.batch_open_since)


def health(jobs, now):
    """Return (healthy, body) for /healthz: healthy when every job runs.

    JOBS is a list of JobStatus. BODY is a JSON-ready dict with one entry
    per job, and contains no connection string.
    """
    entries = []
    for label, job in zip(job_labels(jobs), jobs):
        open_seconds = batch_open_seconds(job, now)
        last_batch_age = None
        if job.last_batch_time is not None:
            last_batch_age = round(max(0.0, now - job.last_batch_time), 3)
        entries.append({
            "job": label,
            "file": job.path,
            "state": job.state,
            "standby": job.standby,
            "pid": job.pid,
            "restarts": job.restarts,
            "batches": job.totals["batches"],
            "last_batch_age_seconds": last_batch_age,
            "batch_open_seconds": round(open_seconds, 3) if open_seconds is not None else None,
        })
    healthy = all(job.state == states.RUNNING for job in jobs)
    return healthy, {"status": "ok" if healthy else "unhealthy", "jobs": entries}
