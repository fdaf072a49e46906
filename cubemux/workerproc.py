"""Forking a worker process and setting it up after the fork."""

import ctypes
import logging
import os
import signal
import threading

from cubemux import jobrun, logsetup
from cubemux.errors import EXIT_CRASH
from cubemux.reports import PipeReporter, beat_interval

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1

# Signals whose master handlers a worker must not keep. SIGHUP is ignored
# because reloading is the master's work, and a terminal hangup reaches the
# whole process group.
_RESET_SIGNALS = (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)


def _die_with_parent():
    """Ask Linux to send SIGTERM when the master dies, however it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError) as error:
        log.warning("cannot set the parent-death signal (%s); the worker relies "
                    "on its beat thread to notice a dead master", error)


def start_worker(job, verbosity, system, stop_timeout):
    """Fork a worker for JOB. Return (pid, read end of its report pipe).

    STOP_TIMEOUT is how long, in seconds, the worker may take to finish its
    batch once the master is gone before it exits at once.
    """
    read_fd, write_fd = os.pipe()
    master_pid = os.getpid()
    try:
        # NOTE: the master's server threads exist at this fork. The worker
        # takes none of their locks except logging's, which the logging
        # module re-creates in the child. Python 3.12 warns about such forks.
        pid = system.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid:
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        return pid, read_fd

    code = EXIT_CRASH
    try:
        os.close(read_fd)
        code = _worker_main(job, verbosity, write_fd, master_pid, stop_timeout)
    except SystemExit as exit_request:
        code = exit_request.code if isinstance(exit_request.code, int) else EXIT_CRASH
    except BaseException:
        # The worker must never return into the master's loop.
        log.exception("worker failed")
    finally:
        logging.shutdown()
        os._exit(code)


def _worker_main(job, verbosity, write_fd, master_pid, stop_timeout):
    signal.set_wakeup_fd(-1)
    for signum in _RESET_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _die_with_parent()
    if os.getppid() != master_pid:
        return EXIT_CRASH

    if job.logfile or job.use_skylog:
        logsetup.setup(job.job_name, verbosity, job.logfile, job.log_size,
                       job.log_count, job.use_skylog)
    else:
        logsetup.relabel(job.job_name, verbosity)
    close_inherited_fds(keep=_logging_fds() | {write_fd})
    holder = {}
    master_lost = threading.Event()

    def master_gone():
        if master_lost.is_set():
            return
        master_lost.set()
        log.warning("stopping: the master process is gone; exiting at the latest "
                    "in %.0f s", stop_timeout)
        _exit_later(stop_timeout)
        worker = holder.get("worker")
        if worker is not None:
            worker.request_stop()
        else:
            os._exit(EXIT_CRASH)

    interval = beat_interval(job.worker_timeout)
    reporter = PipeReporter(write_fd, master_pid, master_gone, interval)
    reporter.start()
    return jobrun.run_job(job, reporter, retry=False, on_worker=holder.__setitem__)


def _exit_later(seconds):
    """Exit the process after SECONDS, wherever its main thread is."""
    timer = threading.Timer(seconds, os._exit, (EXIT_CRASH,))
    timer.daemon = True
    timer.start()


def _logging_fds():
    """Return the descriptors that the root logger's handlers write to."""
    fds = set()
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None) or getattr(handler, "socket", None)
        try:
            fds.add(stream.fileno())
        except (AttributeError, OSError, ValueError):
            continue
    return fds


def close_inherited_fds(keep):
    """Close every descriptor above stderr that is not in KEEP.

    A worker inherits the master's descriptors: the wakeup pipe, the other
    workers' report pipes, the pidfile lock and listening sockets. Holding
    them would keep those alive after the master is gone.
    """
    start = 3
    for fd in sorted(fd for fd in keep if fd >= 3):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, os.sysconf("SC_OPEN_MAX"))
