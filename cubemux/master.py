"""The master: one worker process per job file, kept running.

The master opens no database connection. It forks a worker per job, reads
the workers' reports from pipes, restarts crashed workers after a backoff,
kills workers that stay silent past worker_timeout, and reloads the job
folder on SIGHUP. Signal handlers only record the signal and wake the loop.
"""

import errno
import logging
import os
import select
import signal
import time

from cubemux import config, logsetup, metrics, states
from cubemux.errors import EXIT_CRASH, FATAL_EXIT_CODES, ConfigError
from cubemux.jobs import JobSlot
from cubemux.sysapi import SystemAPI

log = logging.getLogger(__name__)

DEFAULT_GRACEFUL_TIMEOUT = 30.0

_HANDLED_SIGNALS = (signal.SIGCHLD, signal.SIGHUP, signal.SIGINT, signal.SIGTERM)


class Master:
    """Supervises the jobs of one folder."""

    def __init__(self, directory, verbosity=0, graceful_timeout=DEFAULT_GRACEFUL_TIMEOUT,
                 system=None, metrics_address=None):
        self.directory = directory
        self.verbosity = verbosity
        self.graceful_timeout = graceful_timeout
        self.system = system or SystemAPI()
        self.slots = {}
        self.signals = []
        self.stopping_since = None
        self.wake_read = None
        self.wake_write = None
        # (host, port) of /metrics and /healthz; None serves no HTTP.
        self.metrics_address = metrics_address
        self.metrics_server = None

    # Signals.

    def install_signals(self):
        self.wake_read, self.wake_write = os.pipe()
        for fd in (self.wake_read, self.wake_write):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        signal.set_wakeup_fd(self.wake_write)
        for signum in _HANDLED_SIGNALS:
            signal.signal(signum, self._record_signal)

    def _record_signal(self, signum, frame):
        self.signals.append(signum)

    def handle_signals(self):
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGHUP:
                self.reload()
            elif signum in (signal.SIGINT, signal.SIGTERM):
                if self.stopping_since is None:
                    log.info("stopping: %s received, stopping every job",
                             signal.Signals(signum).name)
                    self.stop_all()
                elif signum == signal.SIGINT:
                    log.info("stopping at once: second SIGINT received")
                    self.kill_all()

    # Main loop.

    def run(self):
        """Run until stopped. Return the exit code of the master."""
        self.start_metrics_server()
        self.install_signals()
        log.info("started master for %s", os.path.abspath(self.directory))
        self.reload(first=True)
        while not self.finished():
            self.handle_signals()
            self.reap()
            self.wait_for_reports(timeout=1.0)
            self.murder_silent()
            self.spawn_due()
            self.enforce_graceful_timeout()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        log.info("stopped master")
        return 0

    def start_metrics_server(self):
        """Serve /metrics and /healthz when an address is set.

        Raise SystemExit with a message when the address cannot be bound.
        """
        if self.metrics_address is None:
            return
        from cubemux.httpserver import start_server

        host, port = self.metrics_address
        try:
            self.metrics_server = start_server(
                host, port, lambda: metrics.read_jobs(self))
        except OSError as error:
            raise SystemExit("cannot serve metrics on %s port %d: %s; pass another "
                             "--metrics-host or --metrics-port"
                             % (host, port, error.strerror or error))

    def finished(self):
        if self.stopping_since is None:
            return False
        return all(slot.pid is None for slot in self.slots.values())

    # Jobs.

    def scan(self):
        """Return {path: JobConfig or ConfigError} for the folder's job files."""
        found = {}
        seen = {}
        for path in config.job_files(self.directory):
            try:
                job = config.load_job(path)
            except ConfigError as error:
                found[path] = error
                continue
            key = (job.pgq_queue_name, job.pgq_consumer_id)
            if key in seen:
                found[path] = ConfigError(
                    "%s: queue %s and consumer %s are already used by %s: give "
                    "this job another pgq_consumer_id or remove the file"
                    % (path, key[0], key[1], seen[key]))
                continue
            seen[key] = path
            found[path] = job
        return found

    def reload(self, first=False):
        """Start new jobs, stop removed ones and restart changed ones."""
        if not first:
            log.info("reloading %s", self.directory)
        found = self.scan()
        for path, slot in list(self.slots.items()):
            if path not in found:
                log.info("removed job %s: its file is gone", slot.name)
                slot.removed = True
                self.stop_slot(slot)
        for path, job in found.items():
            slot = self.slots.get(path)
            if isinstance(job, ConfigError):
                self._handle_invalid(path, slot, job)
            elif slot is None:
                self.slots[path] = JobSlot(path, job)
                self.spawn(self.slots[path])
            elif slot.job != job:
                log.info("changed job %s: restarting it", job.job_name)
                slot.pending_job = job
                if slot.pid is None:
                    self._apply_pending(slot)
                else:
                    self.stop_slot(slot)

    def _handle_invalid(self, path, slot, error):
        for line in error.problems:
            log.error("invalid job file: %s", line)
        if slot is None:
            slot = JobSlot(path, None)
            self.slots[path] = slot
            slot.change_state(states.FATAL, "invalid job file")
            slot.count_error(metrics.ERROR_CONFIG)
        elif slot.job is not None:
            log.error("kept job %s running with its previous settings",
                      slot.name)
            slot.count_error(metrics.ERROR_CONFIG)

    def _apply_pending(self, slot):
        slot.job = slot.pending_job
        slot.pending_job = None
        slot.backoff.cap = slot.job.max_backoff
        slot.backoff.reset()
        self.spawn(slot)

    # Processes.

    def spawn(self, slot):
        """Fork a worker for SLOT."""
        from cubemux.workerproc import start_worker

        slot.pid, slot.report_fd = start_worker(
            slot.job, self.verbosity, self._fds_to_close(), self.system)
        slot.started_at = self.system.monotonic()
        slot.last_beat = slot.started_at
        slot.pending = b""
        slot.batch_open_since = None
        slot.queue_figures = None
        slot.change_state(states.STARTING, "spawned pid %d" % slot.pid)

    def _fds_to_close(self):
        fds = [self.wake_read, self.wake_write]
        if self.metrics_server is not None:
            fds.append(self.metrics_server.fileno())
        fds.extend(slot.report_fd for slot in self.slots.values()
                   if slot.report_fd is not None)
        return fds

    def reap(self):
        """Collect every exited worker and decide what comes next for its job."""
        while True:
            try:
                pid, status = self.system.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self._slot_of(pid)
            if slot is not None:
                self.worker_exited(slot, status)

    def _slot_of(self, pid):
        for slot in self.slots.values():
            if slot.pid == pid:
                return slot
        return None

    def worker_exited(self, slot, status):
        code = os.waitstatus_to_exitcode(status)
        ran = self.system.monotonic() - slot.started_at
        slot.drain_reports()
        slot.close_reports()
        pid, slot.pid = slot.pid, None
        if code < 0:
            how = "killed by %s" % signal.Signals(-code).name
        else:
            how = "exit code %d" % code
        # A worker that the master killed was counted when it was killed.
        kind = metrics.exit_error_kind(code)
        if kind is not None and not slot.killed:
            slot.count_error(kind)

        if slot.removed:
            slot.change_state(states.STOPPED, "exited pid %d (%s)" % (pid, how))
            del self.slots[slot.path]
        elif self.stopping_since is not None:
            slot.change_state(states.STOPPED, "exited pid %d (%s)" % (pid, how))
        elif slot.pending_job is not None:
            slot.change_state(states.STOPPED, "exited pid %d (%s)" % (pid, how))
            self._apply_pending(slot)
        elif code in FATAL_EXIT_CODES:
            slot.change_state(states.FATAL, "exited pid %d (%s), waiting for the "
                              "operator" % (pid, how))
        elif slot.state == states.STOPPING:
            slot.change_state(states.STOPPED, "exited pid %d (%s)" % (pid, how))
        else:
            if ran >= slot.healthy_after:
                slot.backoff.reset()
            delay = slot.backoff.next_delay()
            slot.restarts += 1
            slot.next_start = self.system.monotonic() + delay
            slot.change_state(states.BACKOFF, "exited pid %d (%s, not expected), "
                              "restarting in %.1f s" % (pid, how, delay))

    def spawn_due(self):
        if self.stopping_since is not None:
            return
        now = self.system.monotonic()
        for slot in list(self.slots.values()):
            if slot.state == states.BACKOFF and slot.pid is None and now >= slot.next_start:
                self.spawn(slot)

    def wait_for_reports(self, timeout):
        fds = {slot.report_fd: slot for slot in self.slots.values()
               if slot.report_fd is not None}
        try:
            ready, _, _ = select.select([self.wake_read, *fds], [], [], timeout)
        except InterruptedError:
            return
        for fd in ready:
            if fd == self.wake_read:
                _drain(self.wake_read)
                continue
            slot = fds[fd]
            slot.read_reports(self.system.monotonic())

    def murder_silent(self):
        """Kill workers that stayed silent longer than their worker_timeout."""
        now = self.system.monotonic()
        for slot in self.slots.values():
            if slot.pid is None or slot.job is None:
                continue
            silent = now - slot.last_beat
            if silent > slot.job.worker_timeout and not slot.killed:
                log.warning("killing worker pid %d of job %s: silent for %.0f s, "
                            "more than worker_timeout %.0f s", slot.pid, slot.name,
                            silent, slot.job.worker_timeout,
                            extra={"job": slot.name})
                self._signal(slot, signal.SIGKILL)
                slot.killed = True
                slot.count_error(metrics.ERROR_TIMEOUT)

    def stop_slot(self, slot):
        if slot.pid is None:
            slot.change_state(states.STOPPED, "stopped")
            if slot.removed:
                del self.slots[slot.path]
            return
        slot.change_state(states.STOPPING, "asked pid %d to stop" % slot.pid)
        slot.stop_requested_at = self.system.monotonic()
        self._signal(slot, signal.SIGTERM)

    def stop_all(self):
        self.stopping_since = self.system.monotonic()
        for slot in list(self.slots.values()):
            self.stop_slot(slot)

    def kill_all(self):
        for slot in self.slots.values():
            if slot.pid is not None:
                self._signal(slot, signal.SIGKILL)
                slot.killed = True

    def enforce_graceful_timeout(self):
        now = self.system.monotonic()
        for slot in self.slots.values():
            if slot.pid is None or slot.state != states.STOPPING or slot.killed:
                continue
            if now - slot.stop_requested_at > self.graceful_timeout:
                log.warning("killing worker pid %d of job %s: still running %.0f s "
                            "after the stop request", slot.pid, slot.name,
                            self.graceful_timeout, extra={"job": slot.name})
                self._signal(slot, signal.SIGKILL)
                slot.killed = True
                slot.count_error(metrics.ERROR_TIMEOUT)

    def _signal(self, slot, signum):
        try:
            self.system.kill(slot.pid, signum)
        except ProcessLookupError:
            pass


def _drain(fd):
    while True:
        try:
            if not os.read(fd, 4096):
                return
        except BlockingIOError:
            return
        except OSError as error:
            if error.errno == errno.EINTR:
                continue
            raise


def run_master(directory, verbosity=0, graceful_timeout=DEFAULT_GRACEFUL_TIMEOUT,
               metrics_address=None):
    logsetup.setup("master", verbosity)
    return Master(directory, verbosity, graceful_timeout,
                  metrics_address=metrics_address).run()
