"""Forking a worker process and setting it up after the fork."""

import ctypes
import logging
import os
import signal

from cubemux import jobrun, logsetup
from cubemux.errors import EXIT_CRASH
from cubemux.reports import PipeReporter

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """Ask Linux to send SIGTERM when the master dies, however it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        log.warning("cannot set the parent-death signal; the worker relies on "
                    "its beat thread to notice a dead master")


def start_worker(job, verbosity, fds_to_close, system):
    """Fork a worker for JOB. Return (pid, read end of its report pipe)."""
    read_fd, write_fd = os.pipe()
    master_pid = os.getpid()
    pid = system.fork()
    if pid:
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        return pid, read_fd

    code = EXIT_CRASH
    try:
        os.close(read_fd)
        code = _worker_main(job, verbosity, fds_to_close, write_fd, master_pid)
    except SystemExit as exit_request:
        code = exit_request.code if isinstance(exit_request.code, int) else EXIT_CRASH
    except BaseException:
        # The child must never return into the master's loop.
        log.exception("worker failed")
    finally:
        logging.shutdown()
        os._exit(code)


def _worker_main(job, verbosity, fds_to_close, write_fd, master_pid):
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGHUP, signal.SIGINT, signal.SIGTERM,
                   signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)
    for fd in fds_to_close:
        try:
            os.close(fd)
        except OSError:
            pass
    _die_with_parent()
    if os.getppid() != master_pid:
        return EXIT_CRASH

    logsetup.setup(job.job_name, verbosity, job.logfile, job.log_size,
                   job.log_count, job.use_skylog)
    holder = {}

    def master_gone():
        log.warning("stopping: the master process is gone")
        worker = holder.get("worker")
        if worker is not None:
            worker.request_stop()
        else:
            os._exit(EXIT_CRASH)

    reporter = PipeReporter(write_fd, master_pid, master_gone)
    reporter.start()
    return jobrun.run_job(job, reporter, retry=False, on_worker=holder.__setitem__)
