"""Messages from a worker to its master over a pipe, one JSON object a line.

A worker sends ``beat`` every few seconds from a thread of its own, so the
master sees it alive in the middle of a long batch, ``started`` once it is
connected and registered, and ``batch`` after each finished batch.
"""

import errno
import json
import logging
import os
import threading
import time

from cubemux.worker import Reporter

log = logging.getLogger(__name__)

BEAT_INTERVAL = 2.0


class PipeReporter(Reporter):
    """Writes a worker's reports into the pipe to the master."""

    def __init__(self, fd, master_pid, on_master_gone):
        self.fd = fd
        self.master_pid = master_pid
        self.on_master_gone = on_master_gone
        self.batch_open_since = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_loop, daemon=True,
                                        name="cubemux-beat")

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()

    def _beat_loop(self):
        while not self._stop.wait(BEAT_INTERVAL):
            if os.getppid() != self.master_pid:
                self.on_master_gone()
                return
            self.send("beat", batch_open_since=self.batch_open_since)

    def send(self, kind, **fields):
        fields["kind"] = kind
        fields["time"] = time.time()
        data = (json.dumps(fields, separators=(",", ":")) + "\n").encode()
        try:
            os.write(self.fd, data)
        except BlockingIOError:
            pass  # The master is behind; a later report carries the news.
        except OSError as error:
            if error.errno == errno.EPIPE:
                self.on_master_gone()
            else:
                raise

    def beat(self, batch_id=None):
        if batch_id is not None and self.batch_open_since is None:
            self.batch_open_since = time.time()
        self.send("beat", batch_open_since=self.batch_open_since)

    def started(self):
        self.send("started")

    def queue_figures(self, figures):
        self.send("queue", **figures)

    def batch_done(self, batch, counts, seconds):
        self.batch_open_since = None
        fields = {"batch_id": batch.batch_id, "tick_id": batch.tick_id,
                  "seconds": seconds, "skipped": counts is None}
        if counts is not None:
            fields.update(events=counts.events, inserted=counts.inserted,
                          deleted=counts.deleted,
                          partitions_created=counts.partitions_created)
        self.send("batch", **fields)


def read_reports(fd, pending):
    """Read what FD holds. Return (messages, rest of a line, closed)."""
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
    return messages, lines[-1], False
