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
from cubemux.errors import EXIT_CRASH, EXIT_OK, ConfigError, CubemuxError
from cubemux.worker import Worker, describe_error

log = logging.getLogger(__name__)

# A run that lasted this long (seconds) starts the backoff again from 1 s.
HEALTHY_AFTER = 30.0


class _StopSignals:
    """SIGINT and SIGTERM ask the worker to stop after its current batch.

    SIGQUIT stops at once, and the open batch rolls back. Under the master,
    repeats change nothing, because a supervisor may signal the whole process
    group and the master forwards the signal too. A job run alone stops at
    once on a second SIGINT, as a double Ctrl-C stopped the original script.
    With RELOAD, SIGHUP makes run_job() read the job file again.
    """

    def __init__(self, worker, repeat_stops_now=False):
        self.worker = worker
        self.repeat_stops_now = repeat_stops_now
        self.stop_requested = False
        self.reload_requested = False

    def install(self, reload=False):
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._stop_after_batch)
        signal.signal(signal.SIGQUIT, self._stop_now)
        if reload:
            signal.signal(signal.SIGHUP, self._reload)

    def _stop_after_batch(self, signum, frame):
        if signum == signal.SIGINT and self.repeat_stops_now and self.stop_requested:
            raise SystemExit(EXIT_OK)
        self.stop_requested = True
        self.worker.request_stop()

    def _stop_now(self, signum, frame):
        raise SystemExit(EXIT_OK)

    def _reload(self, signum, frame):
        self.reload_requested = True
        self.worker.request_stop()


def run_job(job, reporter=None, retry=False, on_worker=None, reload_job=None):
    """Run JOB until it is asked to stop. Return the process exit code.

    ON_WORKER, when given, is called as on_worker("worker", worker) for each
    Worker created. RELOAD_JOB, when given, is called on SIGHUP and returns
    the job's new JobConfig or raises ConfigError.
    """
    worker = Worker(job, reporter)
    if on_worker is not None:
        on_worker("worker", worker)
    signals = _StopSignals(worker, repeat_stops_now=retry)
    signals.install(reload=reload_job is not None)
    backoff = Backoff(job.max_backoff)
    try:
        while not signals.stop_requested:
            started = time.monotonic()
            failed = _run_worker(worker)
            if failed is not None and (failed != EXIT_CRASH or not retry):
                return failed
            if signals.stop_requested:
                break
            if signals.reload_requested:
                worker = _reload(worker, signals, reload_job, on_worker)
                continue
            if failed is None:
                # Stopped by the worker itself, for example when its master is gone.
                break

            worker.close()
            if time.monotonic() - started >= HEALTHY_AFTER:
                backoff.reset()
            delay = backoff.next_delay()
            log.info("retrying in %.1f s", delay)
            worker.stopping.wait(delay)
        return EXIT_OK
    finally:
        worker.close()


def _run_worker(worker):
    """Run WORKER until it stops. Return None, or the exit code of its failure."""
    job = worker.job
    try:
        worker.run()
    except CubemuxError as error:
        reason = describe_error(error, job)
        log.error("%s", reason)
        code = error.exit_code
    except psycopg2.Error as error:
        reason = "database error: %s" % describe_error(error, job)
        log.error("%s", reason)
        code = EXIT_CRASH
    except Exception as error:
        reason = "unexpected error: %s" % describe_error(error, job)
        log.exception("unexpected error")
        code = EXIT_CRASH
    else:
        return None
    # The master shows it in the job's status while the job waits.
    worker.reporter.failed(reason)
    return code


def _reload(worker, signals, reload_job, on_worker):
    """Read the job file again. Return the worker to go on with."""
    signals.reload_requested = False
    worker.stopping.clear()
    try:
        job = reload_job()
    except ConfigError as error:
        for line in error.problems:
            log.error("reload failed: %s", line)
        log.error("kept running with the previous settings; fix the file and "
                  "reload again")
        return worker
    if job == worker.job:
        log.info("reloaded: the job file is unchanged")
        return worker

    log.info("reloaded: starting again with the changed job file")
    worker.close()
    worker = Worker(job, worker.reporter)
    signals.worker = worker
    if on_worker is not None:
        on_worker("worker", worker)
    if signals.stop_requested:
        worker.request_stop()
    return worker
