"""Run one job in the current process: signals, error handling, exit codes.

``cubemux run FILE`` uses this with retries, as the original script retried
forever after a failure. A worker forked by the master uses it without
retries and leaves the backoff to the master.
"""

import logging
import signal
import time

import psycopg2

from cubemux.backoff import Backoff
from cubemux.errors import EXIT_CRASH, EXIT_OK, CubemuxError
from cubemux.worker import Worker, describe_error

log = logging.getLogger(__name__)

# A run that lasted this long (seconds) starts the backoff again from 1 s.
HEALTHY_AFTER = 30.0


class _StopSignals:
    """SIGINT and SIGTERM ask the worker to stop after its current batch.

    Repeats change nothing, because a supervisor may signal the whole process
    group and the master forwards the signal too. SIGQUIT stops at once, and
    the open batch rolls back.
    """

    def __init__(self, worker):
        self.worker = worker

    def install(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._stop_after_batch)
        signal.signal(signal.SIGQUIT, self._stop_now)

    def _stop_after_batch(self, signum, frame):
        self.worker.request_stop()

    def _stop_now(self, signum, frame):
        raise SystemExit(EXIT_OK)


def run_job(job, reporter=None, retry=False, on_worker=None):
    """Run JOB until it is asked to stop. Return the process exit code.

    ON_WORKER, when given, is called as on_worker("worker", worker) first.
    """
    worker = Worker(job, reporter)
    if on_worker is not None:
        on_worker("worker", worker)
    signals = _StopSignals(worker)
    signals.install()
    backoff = Backoff(job.max_backoff)
    try:
        while True:
            started = time.monotonic()
            try:
                worker.run()
                return EXIT_OK
            except CubemuxError as error:
                log.error("%s", describe_error(error, job))
                if error.exit_code != EXIT_CRASH or not retry:
                    return error.exit_code
            except psycopg2.Error as error:
                log.error("database error: %s", describe_error(error, job))
                if not retry:
                    return EXIT_CRASH
            except Exception:
                log.exception("unexpected error")
                if not retry:
                    return EXIT_CRASH
            worker.close()
            if time.monotonic() - started >= HEALTHY_AFTER:
                backoff.reset()
            delay = backoff.next_delay()
            log.info("retrying in %.1f s", delay)
            if worker.stopping.wait(delay):
                return EXIT_OK
    finally:
        worker.close()
