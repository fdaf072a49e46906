"""Messages from a worker to its master over a pipe, one JSON object a line.

A worker sends ``beat`` every few seconds from a thread of its own, so the
master gets reports from it in the middle of a long batch. It also sends
``started`` once it is connected and registered, ``queue`` with PgQ's lag
figures, ``standby`` while another worker has the queue's lock, ``batch``
after each finished batch and ``retention`` after retiring partitions.
"""

import errno
import json
import logging
import os
import select
import threading
import time

from cubemux.worker import Reporter

log = logging.getLogger(__name__)

BEAT_INTERVAL = 2.0

# A worker beats at least this many times within its worker_timeout, so one
# late beat does not get it killed.
BEATS_PER_TIMEOUT = 4

# A line that is partly written when the pipe fills up is finished within
# this many seconds, or the rest is dropped.
PARTIAL_WRITE_TIMEOUT = 5.0

# A report line longer than this (bytes) is dropped by the master.
MAX_LINE_BYTES = 1024 * 1024


def beat_interval(worker_timeout):
    """Return the seconds between beats for a job's worker_timeout."""
    return min(BEAT_INTERVAL, worker_timeout / BEATS_PER_TIMEOUT)


# Characters of a failure's text that a worker sends to the master.
MAX_REASON = 500


class PipeReporter(Reporter):
    """Writes a worker's reports into the pipe to the master.

    The pipe is non-blocking, so a master that stops reading can never stall
    a batch: a message that finds the pipe full is dropped. Writes from the
    beat thread and the main thread take a lock, so lines never interleave.
    """

    def __init__(self, fd, master_pid, on_master_gone, interval=BEAT_INTERVAL):
        self.fd = fd
        self.master_pid = master_pid
        self.on_master_gone = on_master_gone
        self.interval = interval
        self.batch_open_since = None
        self.dropped = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_loop, daemon=True,
                                        name="cubemux-beat")
        os.set_blocking(fd, False)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()

    def _beat_loop(self):
        while not self._stop.wait(self.interval):
            if os.getppid() != self.master_pid:
                self.on_master_gone()
                return
            self.send("beat", batch_open_since=self.batch_open_since)

    def send(self, kind, **fields):
        fields["kind"] = kind
        fields["time"] = time.time()
        data = (json.dumps(fields, separators=(",", ":")) + "\n").encode()
        with self._lock:
            try:
                self._write_line(data)
            except OSError as error:
                if error.errno != errno.EPIPE:
                    raise
                self.on_master_gone()

    def _write_line(self, data):
        try:
            written = os.write(self.fd, data)
        except BlockingIOError:
            # The master is behind. A later report carries the news, and the
            # master counts a dropped beat as silence only past worker_timeout.
            self.dropped += 1
            return
        deadline = time.monotonic() + PARTIAL_WRITE_TIMEOUT
        while written < len(data):
            left = deadline - time.monotonic()
            if left <= 0:
                self.dropped += 1
                return
            select.select([], [self.fd], [], left)
            try:
                written += os.write(self.fd, data[written:])
            except BlockingIOError:
                continue

    def beat(self, batch_id=None):
        if batch_id is not None and self.batch_open_since is None:
            self.batch_open_since = time.time()
        self.send("beat", batch_open_since=self.batch_open_since)

    def started(self):
        self.send("started")

    def queue_figures(self, figures):
        self.send("queue", **figures)

    def standby(self, waiting):
        self.send("standby", waiting=waiting)

    def retention(self, action, count):
        self.send("retention", action=action, count=count)

    def batch_done(self, batch, counts, seconds):
        self.batch_open_since = None
        fields = {"batch_id": batch.batch_id, "tick_id": batch.tick_id,
                  "seconds": seconds, "skipped": counts is None}
        if counts is not None:
            fields.update(events=counts.events, inserted=counts.inserted,
                          deleted=counts.deleted,
                          partitions_created=counts.partitions_created,
                          events_skipped=counts.events_skipped,
                          dead_letters=counts.dead_letters,
                          columns_added=counts.columns_added,
                          values_dropped=counts.values_dropped)
        self.send("batch", **fields)

    def failed(self, reason):
        self.send("error", reason=reason[:MAX_REASON])


def read_reports(fd, pending):
    """Read what FD contains. Return (messages, rest of a line, closed)."""
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return [], pending, False
    if not chunk:
        return [], pending, True
    lines = (pending + chunk).split(b"\n")
    messages = []
    for line in lines[:-1]:
        try:
            messages.append(json.loads(line))
        except ValueError:
            log.warning("ignored an unreadable worker report: %r", line[:200])
    rest = lines[-1]
    if len(rest) > MAX_LINE_BYTES:
        log.warning("dropped a worker report longer than %d bytes", MAX_LINE_BYTES)
        rest = b""
    return messages, rest, False
