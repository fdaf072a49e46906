"""The master's record of one job: its settings, its worker and its state."""

import logging
import os

from cubemux import metrics, reports, states
from cubemux.backoff import Backoff

log = logging.getLogger(__name__)

# A worker that ran this long (seconds) before it exited starts the backoff
# again from 1 s.
HEALTHY_AFTER = 30.0


class JobSlot:
    """One job file and the worker that runs it. change_state() is the only
    writer of ``state``."""

    def __init__(self, path, job):
        self.path = path
        self.job = job
        self.pending_job = None
        self.state = states.STOPPED
        self.pid = None
        self.report_fd = None
        self.pending = b""
        self.started_at = 0.0
        self.last_beat = 0.0
        self.next_start = 0.0
        self.stop_requested_at = 0.0
        self.restarts = 0
        self.killed = False
        self.removed = False
        self.healthy_after = HEALTHY_AFTER
        self.backoff = Backoff(job.max_backoff if job else 60.0)
        self.last_batch_time = None
        self.batch_open_since = None
        self.totals = {"batches": 0, "events": {}, "inserted": {}, "deleted": {},
                       "skipped": 0, "partitions_created": 0}
        self.batch_durations = metrics.DurationHistogram()
        self.errors = {}
        self.queue_figures = None

    @property
    def name(self):
        if self.job is not None:
            return self.job.job_name
        return os.path.splitext(os.path.basename(self.path))[0]

    def change_state(self, new_state, reason):
        old = self.state
        self.state = new_state
        if new_state in (states.STARTING, states.BACKOFF, states.STOPPED, states.FATAL):
            self.killed = False if new_state == states.STARTING else self.killed
        level = logging.WARNING if new_state in (states.FATAL, states.BACKOFF) else logging.INFO
        log.log(level, "%s -> %s: %s", old, new_state, reason, extra={"job": self.name})

    def read_reports(self, now):
        messages, self.pending, closed = reports.read_reports(self.report_fd, self.pending)
        for message in messages:
            self.handle_report(message, now)
        if closed:
            self.close_reports()

    def drain_reports(self):
        if self.report_fd is None:
            return
        while self.report_fd is not None:
            before = self.report_fd
            self.read_reports(0.0)
            if self.report_fd == before and not self.pending:
                # Nothing more without blocking.
                break

    def close_reports(self):
        if self.report_fd is not None:
            os.close(self.report_fd)
            self.report_fd = None

    def handle_report(self, message, now):
        if now:
            self.last_beat = now
        kind = message.get("kind")
        self.batch_open_since = message.get("batch_open_since", self.batch_open_since)
        if kind == "started" and self.state == states.STARTING:
            self.change_state(states.RUNNING, "connected and registered")
        elif kind == "queue":
            self.queue_figures = {name: message.get(name)
                                  for name in metrics.QUEUE_FIGURES}
        elif kind == "batch":
            self.batch_open_since = None
            self.last_batch_time = message.get("time")
            self.totals["batches"] += 1
            self.totals["skipped"] += 1 if message.get("skipped") else 0
            self.totals["partitions_created"] += message.get("partitions_created") or 0
            self.batch_durations.observe(message.get("seconds") or 0.0)
            for field in ("events", "inserted", "deleted"):
                bucket = self.totals[field]
                for key, count in (message.get(field) or {}).items():
                    bucket[key] = bucket.get(key, 0) + count

    def count_error(self, kind):
        """Count one error of KIND (one of metrics.ERROR_KINDS) for this job."""
        self.errors[kind] = self.errors.get(kind, 0) + 1
