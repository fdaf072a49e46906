"""COPY statements of one batch, run by a thread of their own.

The batch's thread encodes rows and hands each COPY (statement and encoded
text) to a CopySender, whose thread sends it on the destination connection
while the batch's thread decodes the next events. So the destination's work
on the rows overlaps the worker's, instead of following it.

Only one thread may use a connection during a COPY. The batch's thread must
call drain() before it runs any other statement on the connection, and
close() before it rolls back or closes it.
"""

import dataclasses
import logging
import queue
import threading

import psycopg2

log = logging.getLogger(__name__)

# COPYs waiting for the thread. When they are all taken, send() waits for
# the destination, so memory stays bounded however large the batch is.
QUEUE_DEPTH = 4

# Characters that one read() of the COPY input returns to psycopg2.
READ_SIZE = 1 << 18

_STOP = object()


@dataclasses.dataclass
class CopyJob:
    """One COPY: its statement, its encoded rows, and what they came from."""

    statement: str
    text: str
    events: list
    target: object
    colset: int | None
    savepoint: bool = False


class Aborted(Exception):
    """Ends a COPY that the batch's thread abandoned."""


class _Input:
    """COPY input that returns the encoded text in slices."""

    def __init__(self, text, aborted):
        self.text = text
        self.position = 0
        self.aborted = aborted

    def read(self, size):
        if self.aborted.is_set():
            raise Aborted("the batch was abandoned during COPY")
        start = self.position
        self.position = start + size
        return self.text[start:self.position]


class CopySender:
    """Sends COPY jobs on CONN from a thread, one after the other.

    After the first job that fails, the thread sends none of the later ones:
    drain() returns the failed job with its error and the jobs not sent, in
    their order, and the caller decides what to do with them.
    """

    def __init__(self, conn, name="cubemux-copy"):
        self.conn = conn
        self.name = name
        self.jobs = queue.Queue(maxsize=QUEUE_DEPTH)
        self.aborted = threading.Event()
        self.failure = None
        self.unsent = []
        self.thread = None

    def send(self, job):
        """Queue JOB. Wait while the queue is full."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name=self.name,
                                           daemon=True)
            self.thread.start()
        self.jobs.put(job)

    def drain(self):
        """Wait for every queued job. Return (failed job, error, unsent jobs).

        The failed job and error are None when every job went through.
        """
        if self.thread is None:
            return None, None, []
        self.jobs.join()
        failure, self.failure = self.failure, None
        unsent, self.unsent = self.unsent, []
        if failure is None:
            return None, None, unsent
        return failure[0], failure[1], unsent

    def close(self, abort=False):
        """End the thread and wait for it. ABORT ends a COPY in progress too."""
        if self.thread is None:
            return
        if abort:
            self.aborted.set()
        self.jobs.put(_STOP)
        self.thread.join()
        self.thread = None

    def _run(self):
        while True:
            job = self.jobs.get()
            try:
                if job is _STOP:
                    return
                if self.failure is not None or self.aborted.is_set():
                    self.unsent.append(job)
                else:
                    self._copy(job)
            finally:
                self.jobs.task_done()

    def _copy(self, job):
        try:
            with self.conn.cursor() as cur:
                if job.savepoint:
                    cur.execute("savepoint cubemux_rows")
                try:
                    cur.copy_expert(job.statement, _Input(job.text, self.aborted),
                                    size=READ_SIZE)
                except psycopg2.Error:
                    if job.savepoint and not self.conn.closed:
                        cur.execute("rollback to savepoint cubemux_rows")
                        cur.execute("release savepoint cubemux_rows")
                    raise
                if job.savepoint:
                    cur.execute("release savepoint cubemux_rows")
        except BaseException as error:  # handed to the batch's thread by drain()
            self.failure = (job, error)
