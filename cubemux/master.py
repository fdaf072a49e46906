"""The master: one worker process per job file, kept running.

The master opens no database connection. It forks a worker per job, reads
the workers' reports from pipes, restarts crashed workers after a backoff,
kills workers that stay silent past worker_timeout, and reloads the job
folder on SIGHUP. Signal handlers only record the signal and wake the loop.
Other threads (the control socket, the metrics server) read the published
``snapshot`` and hand requests to the loop through ``submit()``.
"""

import concurrent.futures
import dataclasses
import logging
import os
import queue
import signal
import time

from cubemux import metrics, states
from cubemux.errors import (
    EXIT_BAD_EVENT,
    EXIT_CONFIG,
    EXIT_LOST_POSITION,
    EXIT_OK,
    FATAL_EXIT_CODES,
    ConfigError,
)
from cubemux.jobs import JobSlot, consumer_key, scan_jobs
from cubemux.sysapi import SystemAPI
from cubemux.workerproc import start_worker

log = logging.getLogger(__name__)

DEFAULT_GRACEFUL_TIMEOUT = 30.0

# The loop wakes at least this often (seconds) to check timeouts.
LOOP_TIMEOUT = 1.0

# Worker reports wait in their pipes up to this long (seconds) after the last
# read, so fifty workers' beats wake the loop a few times a second instead of
# dozens. Signals and control requests still wake it at once.
REPORT_COALESCE = 0.25

# The status snapshot is rebuilt at least this often (seconds), and at once
# when a job's state, pid or restart count changes.
SNAPSHOT_INTERVAL = 0.5

# Seconds that a control request waits for the loop to execute it.
REQUEST_TIMEOUT = 10.0

HANDLED_SIGNALS = (signal.SIGCHLD, signal.SIGHUP, signal.SIGINT, signal.SIGTERM,
                   signal.SIGQUIT)

# Reason of each fatal worker exit code, for logs and status.
FATAL_REASONS = {
    EXIT_CONFIG: "invalid job settings",
    EXIT_LOST_POSITION: "lost position",
    EXIT_BAD_EVENT: "an event that cannot be applied",
}


class RequestError(Exception):
    """A control request that the master cannot execute, with the reason."""


@dataclasses.dataclass
class _Request:
    command: str
    arguments: dict
    future: concurrent.futures.Future


class Master:
    """Supervises the jobs of one folder."""

    def __init__(self, directory, verbosity=0,
                 graceful_timeout=DEFAULT_GRACEFUL_TIMEOUT, system=None,
                 metrics_address=None, control_server=None, on_started=None):
        self.directory = os.path.abspath(directory)
        self.verbosity = verbosity
        self.graceful_timeout = graceful_timeout
        self.system = system or SystemAPI()
        self.slots = {}
        self.signals = []
        self.requests = queue.SimpleQueue()
        self.stopping_since = None
        self.wake_read = None
        self.wake_write = None
        self._old_handlers = {}
        # (host, port) of /metrics and /healthz; None serves no HTTP.
        self.metrics_address = metrics_address
        self.metrics_server = None
        self.control_server = control_server
        self.on_started = on_started
        self.pid = os.getpid()
        self.started_at = None
        # Every job's JobStatus, replaced as a whole on each pass of the loop.
        self.snapshot = ()
        self.snapshot_shape = None
        self.snapshot_at = 0.0
        self.reports_read_at = 0.0

    # Main loop.

    def run(self):
        """Supervise the jobs until stopped. Return the master's exit code."""
        try:
            self.start()
            while self.run_once():
                pass
        finally:
            self.halt()
        return EXIT_OK

    def run_once(self):
        """Run one pass of the loop. Return False once the master has stopped."""
        self.handle_signals()
        self.reap()
        self.handle_requests()
        if self.finished():
            return False
        self.murder_silent()
        self.murder_lingering()
        self.spawn_due()
        self.publish_snapshot()
        self.wait_for_reports(self.next_timeout())
        return True

    def start(self):
        """Install the signal handlers, start the servers and the first jobs."""
        self.pid = os.getpid()
        self.started_at = time.time()
        self.install_signals()
        self.start_metrics_server()
        if self.control_server is not None:
            self.control_server.serve(self.handle_control_request)
        log.info("started master pid %d for %s", self.pid, self.directory)
        self.reload(first=True)
        self.publish_snapshot(force=True)
        if self.on_started is not None:
            self.on_started()

    def halt(self):
        """Stop the servers, complete pending requests and restore the signals."""
        if self.stopping_since is None:
            # Halting after an error: pending requests must start no worker.
            self.stopping_since = self.system.monotonic()
        if self.control_server is not None:
            self.control_server.close()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.handle_requests()
        self.restore_signals()
        for slot in self.slots.values():
            slot.close_reports()
        log.info("stopped master pid %d", self.pid)

    def finished(self):
        if self.stopping_since is None:
            return False
        return all(slot.pid is None for slot in self.slots.values())

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

    # Signals.

    def install_signals(self):
        self.wake_read, self.wake_write = os.pipe()
        for fd in (self.wake_read, self.wake_write):
            os.set_blocking(fd, False)
        self._old_handlers["wakeup"] = signal.set_wakeup_fd(self.wake_write)
        for signum in HANDLED_SIGNALS:
            self._old_handlers[signum] = signal.signal(signum, self.record_signal)

    def restore_signals(self):
        if not self._old_handlers:
            return
        signal.set_wakeup_fd(self._old_handlers.pop("wakeup"))
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers = {}
        os.close(self.wake_read)
        os.close(self.wake_write)
        self.wake_read = self.wake_write = None

    def record_signal(self, signum, frame=None):
        self.signals.append(signum)

    def handle_signals(self):
        while self.signals:
            signum = self.signals.pop(0)
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                if self.stopping_since is None:
                    self.reload()
            elif signum == signal.SIGQUIT or (
                    signum == signal.SIGINT and self.stopping_since is not None):
                log.info("stopping at once: %s received, killing every worker", name)
                self.stop_all(signal.SIGKILL)
            elif signum in (signal.SIGINT, signal.SIGTERM):
                if self.stopping_since is None:
                    log.info("stopping: %s received, each worker finishes its batch",
                             name)
                    self.stop_all(signal.SIGTERM)
                else:
                    log.info("ignored %s: already stopping", name)

    def wake(self):
        """Wake the loop from another thread."""
        try:
            os.write(self.wake_write, b"\0")
        except (BlockingIOError, OSError, TypeError):
            # The pipe is full (the loop wakes anyway) or already closed.
            pass

    # Jobs.

    def reload(self, first=False):
        """Start new jobs, stop removed ones and restart changed ones."""
        log.info("%s: scanning %s", "loading" if first else "reloading",
                 self.directory)
        try:
            found = scan_jobs(self.directory, self.slots)
        except OSError as error:
            log.error("reload failed: cannot list %s: %s; every job keeps running "
                      "as it is", self.directory, error.strerror or error)
            return
        except Exception:
            # A master that runs many jobs must outlive a bug in reading one file.
            log.exception("reload failed; every job keeps running as it is")
            return
        if not found:
            log.warning("no job files (*.ini) found in %s", self.directory)
        for path, slot in list(self.slots.items()):
            if path not in found and not slot.removed:
                slot.removed = True
                slot.pending_job = None
                self.stop_slot(slot, "stopping: the job file was removed")
        for path, job in found.items():
            if isinstance(job, ConfigError):
                self.reject_invalid(path, job)
            else:
                self.apply_job(path, job)

    def apply_job(self, path, job):
        """Start a new job, or restart a running one whose file changed."""
        slot = self.slots.get(path)
        if slot is None:
            slot = JobSlot(path, job)
            self.slots[path] = slot
            self.spawn(slot)
        elif slot.removed:
            # The file came back while its worker was stopping.
            slot.removed = False
            slot.pending_job = job
        elif slot.job == job and slot.pending_job is None:
            return
        elif slot.pid is None:
            if slot.job != job:
                log.info("changed: loading the new job file", extra=slot.log_extra)
            slot.pending_job = job
            self.apply_pending(slot)
        elif slot.job != job or slot.pending_job is not None:
            slot.pending_job = job
            self.stop_slot(slot, "restarting: the job file changed")

    def reject_invalid(self, path, error):
        """Log an invalid job file; a worker with older settings keeps running."""
        slot = self.slots.get(path)
        name = slot.name if slot is not None else _job_name_of(path)
        for line in error.problems:
            log.error("invalid job file: %s", line, extra={"job": name})
        if slot is None:
            slot = JobSlot(path, None)
            self.slots[path] = slot
            slot.count_error(metrics.ERROR_CONFIG)
            slot.change_state(states.FATAL, "rejected: the job file is invalid")
        elif slot.job is not None:
            slot.count_error(metrics.ERROR_CONFIG)
            kept = "kept the job running" if slot.pid is not None else "kept the job"
            log.error("%s with its previous settings; fix the file and reload", kept,
                      extra=slot.log_extra)

    def apply_pending(self, slot):
        """Take the new settings of SLOT and start its worker."""
        slot.job = slot.pending_job
        slot.pending_job = None
        slot.backoff.cap = slot.job.max_backoff
        slot.backoff.reset()
        self.spawn(slot)

    def restart_job(self, name):
        """Start the job NAME again, a fatal one included. Return a message.

        A running worker is stopped gracefully first. Raise RequestError when
        the job cannot be restarted.
        """
        if self.stopping_since is not None:
            raise RequestError("the master is stopping")
        slot = self.find_slot(name)
        if slot.removed:
            raise RequestError("job %s is being removed: its file is gone" % slot.name)
        if slot.job is None:
            # The file was invalid at the last reload: read it again.
            found = scan_jobs(self.directory, self.slots).get(slot.path)
            if found is None:
                raise RequestError("job %s cannot start: its file is gone" % slot.name)
            if isinstance(found, ConfigError):
                raise RequestError("job %s cannot start: %s"
                                   % (slot.name, "; ".join(found.problems)))
            slot.pending_job = found
        if slot.pid is not None:
            slot.pending_job = slot.pending_job or slot.job
            self.stop_slot(slot, "restarting: restart requested")
            return ("job %s: stopping worker pid %d; it starts again once the "
                    "worker has exited" % (slot.name, slot.pid))
        slot.pending_job = slot.pending_job or slot.job
        self.apply_pending(slot)
        if slot.pid is None:
            return "job %s: %s" % (slot.name, slot.message)
        return "job %s: started worker pid %d" % (slot.name, slot.pid)

    def find_slot(self, name):
        """Return the slot of the job named NAME, or of the job file NAME."""
        matches = [slot for slot in self.slots.values()
                   if name in (slot.name, slot.path, os.path.basename(slot.path))]
        if not matches:
            raise RequestError("job %r not found: 'cubemux status' lists the jobs"
                               % name)
        if len(matches) > 1:
            raise RequestError(
                "job name %r matches several files: %s; give the file name instead"
                % (name, ", ".join(sorted(os.path.basename(slot.path)
                                          for slot in matches))))
        return matches[0]

    # Processes.

    def spawn(self, slot):
        """Fork a worker for SLOT, unless another worker uses its consumer."""
        now = self.system.monotonic()
        other = self.consumer_user(slot)
        if other is not None:
            slot.next_start = now
            slot.change_state(states.BACKOFF, "waiting: job %s still consumes "
                              "queue %s as consumer %s" % ((other.name,) +
                                                           consumer_key(slot.job)))
            return
        try:
            pid, read_fd = start_worker(slot.job, self.verbosity, self.system,
                                        self.graceful_timeout)
        except OSError as error:
            delay = slot.backoff.next_delay()
            slot.next_start = now + delay
            slot.change_state(states.BACKOFF, "failed to fork a worker: %s; trying "
                              "again in %.1f s" % (error.strerror or error, delay))
            return
        slot.worker_started(pid, read_fd, now)
        slot.change_state(states.STARTING, "spawned worker pid %d" % pid)

    def consumer_user(self, slot):
        """Return another slot whose worker consumes SLOT's queue as its consumer."""
        key = consumer_key(slot.job)
        for other in self.slots.values():
            if (other is not slot and other.pid is not None and other.job is not None
                    and consumer_key(other.job) == key):
                return other
        return None

    def spawn_due(self):
        """Start the workers whose backoff delay has passed."""
        if self.stopping_since is not None:
            return
        now = self.system.monotonic()
        for slot in list(self.slots.values()):
            if (slot.state == states.BACKOFF and slot.pid is None
                    and now >= slot.next_start and self.consumer_user(slot) is None):
                self.spawn(slot)

    def reap(self):
        """Collect every exited worker and decide what comes next for its job."""
        while True:
            try:
                pid, status = self.system.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.slot_of(pid)
            if slot is None:
                log.debug("reaped pid %d: not a worker of any job", pid)
            else:
                self.worker_exited(slot, status)

    def slot_of(self, pid):
        for slot in self.slots.values():
            if slot.pid == pid:
                return slot
        return None

    def worker_exited(self, slot, status):
        """Move the job of a reaped worker to its next state."""
        code = os.waitstatus_to_exitcode(status)
        description = describe_status(status)
        # A worker that the master killed was counted when it was killed.
        kind = metrics.exit_error_kind(code)
        if kind is not None and not slot.killed:
            slot.count_error(kind)
        pid = slot.pid
        healthy_for = slot.worker_gone(self.system.monotonic())
        exited = "exited: worker pid %d, %s" % (pid, description)
        if slot.failure:
            exited = "%s: %s" % (exited, slot.failure)

        if slot.removed:
            slot.change_state(states.STOPPED, exited)
            del self.slots[slot.path]
        elif self.stopping_since is not None:
            slot.change_state(states.STOPPED, exited)
        elif slot.state == states.STOPPING:
            slot.change_state(states.STOPPED, exited)
            if slot.pending_job is not None:
                self.apply_pending(slot)
        elif code in FATAL_EXIT_CODES:
            slot.change_state(states.FATAL, "%s (%s); waiting for the operator: fix "
                              "the cause, then run 'cubemux restart %s'"
                              % (exited, FATAL_REASONS[code], slot.name))
        else:
            self.schedule_restart(slot, healthy_for, exited)

    def schedule_restart(self, slot, healthy_for, exited):
        if healthy_for is not None and healthy_for >= slot.healthy_after:
            slot.backoff.reset()
        delay = slot.backoff.next_delay()
        slot.restarts += 1
        slot.next_start = self.system.monotonic() + delay
        slot.change_state(states.BACKOFF, "%s, not expected; starting it again in "
                          "%.1f s" % (exited, delay))

    def murder_silent(self):
        """Kill workers that stayed silent longer than their worker_timeout."""
        now = self.system.monotonic()
        for slot in self.slots.values():
            if slot.pid is None or slot.killed:
                continue
            silent = now - slot.last_beat
            if silent > slot.job.worker_timeout:
                log.warning("killing: worker pid %d was silent for %.1f s, more than "
                            "worker_timeout %.0f s", slot.pid, silent,
                            slot.job.worker_timeout, extra=slot.log_extra)
                self.kill_worker(slot)

    def murder_lingering(self):
        """Kill stopping workers that still run after graceful_timeout."""
        now = self.system.monotonic()
        for slot in self.slots.values():
            if slot.pid is None or slot.state != states.STOPPING or slot.killed:
                continue
            if now - slot.stop_requested_at > self.graceful_timeout:
                log.warning("killing: worker pid %d still runs %.0f s after the "
                            "stop request", slot.pid, self.graceful_timeout,
                            extra=slot.log_extra)
                self.kill_worker(slot)

    def kill_worker(self, slot):
        self.send_signal(slot, signal.SIGKILL)
        slot.killed = True
        slot.count_error(metrics.ERROR_TIMEOUT)

    def stop_slot(self, slot, message, signum=signal.SIGTERM):
        """Ask the worker of SLOT to stop with SIGNUM; a job without one stops now."""
        if slot.pid is None:
            if slot.state != states.STOPPED:
                slot.change_state(states.STOPPED, message)
            if slot.removed:
                del self.slots[slot.path]
            return
        if slot.state != states.STOPPING:
            slot.stop_requested_at = self.system.monotonic()
            slot.change_state(states.STOPPING, "%s: sent %s to worker pid %d"
                              % (message, signal.Signals(signum).name, slot.pid))
        self.send_signal(slot, signum)
        if signum == signal.SIGKILL:
            slot.killed = True

    def stop_all(self, signum):
        if self.stopping_since is None:
            self.stopping_since = self.system.monotonic()
        for slot in list(self.slots.values()):
            self.stop_slot(slot, "stopping: the master stops", signum)

    def send_signal(self, slot, signum):
        try:
            self.system.kill(slot.pid, signum)
        except ProcessLookupError:
            pass

    # Waiting.

    def next_timeout(self):
        """Return the seconds until the next backoff or timeout is due."""
        now = self.system.monotonic()
        deadlines = [now + LOOP_TIMEOUT]
        for slot in self.slots.values():
            if slot.pid is not None and not slot.killed:
                deadlines.append(slot.last_beat + slot.job.worker_timeout)
                if slot.state == states.STOPPING:
                    deadlines.append(slot.stop_requested_at + self.graceful_timeout)
            elif slot.state == states.BACKOFF and self.stopping_since is None:
                if self.consumer_user(slot) is None:
                    deadlines.append(slot.next_start)
        # A little past the deadline, so that the step after the wait finds it due.
        return max(0.0, min(deadlines) - now) + 0.01

    def wait_for_reports(self, timeout):
        """Wait for reports, signals or requests, and read the reports."""
        quiet = self.reports_read_at + REPORT_COALESCE - self.system.monotonic()
        if quiet > 0:
            woken = self.system.poll([self.wake_read], min(timeout, quiet))
            if self.wake_read in woken:
                _drain(self.wake_read)
                return
            timeout = max(0.0, timeout - quiet)
        fds = {slot.report_fd: slot for slot in self.slots.values()
               if slot.report_fd is not None}
        for fd in self.system.poll([self.wake_read, *fds], timeout):
            if fd == self.wake_read:
                _drain(self.wake_read)
            elif fd in fds and fds[fd].report_fd == fd:
                self.reports_read_at = self.system.monotonic()
                fds[fd].read_reports(self.reports_read_at)

    # Requests from other threads.

    def publish_snapshot(self, force=False):
        """Replace ``snapshot`` with a fresh copy of every job's record.

        Without FORCE, only when a job changed or SNAPSHOT_INTERVAL has passed.
        """
        now = self.system.monotonic()
        slots = sorted(self.slots.values(), key=lambda slot: slot.path)
        shape = tuple((slot.path, slot.state, slot.pid, slot.restarts)
                      for slot in slots)
        if (not force and shape == self.snapshot_shape
                and now - self.snapshot_at < SNAPSHOT_INTERVAL):
            return
        self.snapshot_shape = shape
        self.snapshot_at = now
        self.snapshot = tuple(slot.status(now) for slot in slots)

    def status(self):
        """Return the master's and every job's status. Safe from any thread."""
        return {
            "master": {
                "pid": self.pid,
                "directory": self.directory,
                "started_at": self.started_at,
                "stopping": self.stopping_since is not None,
                "time": time.time(),
            },
            "jobs": [job.as_dict() for job in self.snapshot],
        }

    def submit(self, command, **arguments):
        """Queue a request for the loop from another thread. Return its Future."""
        future = concurrent.futures.Future()
        self.requests.put(_Request(command, arguments, future))
        self.wake()
        return future

    def handle_requests(self):
        """Execute the requests that other threads queued."""
        while True:
            try:
                request = self.requests.get_nowait()
            except queue.Empty:
                return
            try:
                if request.command != "restart":
                    raise RequestError("unknown command %r" % request.command)
                message = self.restart_job(request.arguments.get("job"))
            except RequestError as error:
                request.future.set_result({"ok": False, "error": str(error)})
            else:
                request.future.set_result({"ok": True, "message": message})

    def handle_control_request(self, request):
        """Return the response to a control socket request, in a server thread."""
        command = request.get("command")
        if command == "status":
            return {"ok": True, **self.status()}
        if command == "restart":
            if not isinstance(request.get("job"), str):
                return {"ok": False, "error": "restart needs a job name"}
            future = self.submit("restart", job=request["job"])
            try:
                return future.result(timeout=REQUEST_TIMEOUT)
            except concurrent.futures.TimeoutError:
                return {"ok": False, "error": "the master did not execute the "
                        "request within %.0f s" % REQUEST_TIMEOUT}
        return {"ok": False, "error": "unknown command %r: expected status or "
                "restart" % command}


def describe_status(status):
    """Return a wait status as text: 'exit code 1' or 'killed by SIGKILL'."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = "signal %d" % signum
        return "killed by %s" % name
    if os.WIFEXITED(status):
        return "exit code %d" % os.WEXITSTATUS(status)
    return "wait status %d" % status


def _job_name_of(path):
    return os.path.splitext(os.path.basename(path))[0]


def _drain(fd):
    while True:
        try:
            if not os.read(fd, 4096):
                return
        except (BlockingIOError, InterruptedError):
            return
