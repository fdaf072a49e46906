"""Pidfiles that stay locked while their process runs.

The owner holds an exclusive flock() on the file for as long as it lives, so
a pidfile whose lock is free is stale, whatever pid it names: the kernel
drops the lock when the owner dies, even by SIGKILL.
"""

import fcntl
import os
import time

from cubemux.errors import EXIT_CRASH, EXIT_USAGE, CubemuxError

# A starting process retries a busy lock for this long (seconds), because a
# control command may be checking the lock at that moment.
LOCK_RETRY_SECONDS = 0.5
LOCK_RETRY_INTERVAL = 0.05


class AlreadyRunning(CubemuxError):
    """The pidfile is locked by a live process."""

    exit_code = EXIT_USAGE


class NotRunning(CubemuxError):
    """The pidfile is missing, empty or stale."""

    exit_code = EXIT_CRASH


class PidFile:
    """A pidfile that this process owns from acquire() until release()."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.fd = None

    def acquire(self):
        """Lock the pidfile and write this process's pid into it.

        A stale pidfile is taken over. Raise AlreadyRunning when a live
        process holds the lock, and OSError when the file cannot be opened.
        """
        deadline = time.monotonic() + LOCK_RETRY_SECONDS
        # As for log files, a missing folder is made, so a skytools job file
        # with pidfile = ~/pid/%(job_name)s.pid works on a new machine.
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(LOCK_RETRY_INTERVAL)
                    continue
                raise AlreadyRunning(
                    "%s: another process (pid %s) is running with this pidfile: "
                    "stop it first, or give another pidfile"
                    % (self.path, read_pid(self.path) or "unknown"))
            if _same_file(fd, self.path):
                break
            # The previous owner removed the file between our open() and
            # flock(), so the lock is on a file that no path leads to.
            os.close(fd)
        self.fd = fd
        self.write(os.getpid())

    def write(self, pid):
        """Replace the pid in the file, after a fork (daemonizing)."""
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, b"%d\n" % pid, 0)

    def release(self):
        """Remove the pidfile and drop the lock."""
        if self.fd is None:
            return
        try:
            if _same_file(self.fd, self.path):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def _same_file(fd, path):
    try:
        by_path = os.stat(path)
    except FileNotFoundError:
        return False
    by_fd = os.fstat(fd)
    return (by_path.st_dev, by_path.st_ino) == (by_fd.st_dev, by_fd.st_ino)


def read_pid(path):
    """Return the pid written in PATH, or None when it is missing or invalid."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(64)
    except OSError:
        return None
    try:
        pid = int(text.strip() or b"0")
    except ValueError:
        return None
    return pid if pid > 0 else None


def live_pid(path):
    """Return the pid of the live process that owns the pidfile PATH.

    Raise NotRunning when the file is missing, contains no pid, or is stale.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotRunning("%s: pidfile not found: is the process running?" % path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            locked = True
        else:
            locked = False
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    pid = read_pid(path)
    if not locked:
        raise NotRunning("%s: stale pidfile: process %s is not running"
                         % (path, pid or "unknown"))
    if pid is None:
        raise NotRunning("%s: pidfile contains no pid: the process is still "
                         "starting, try again" % path)
    return pid


def signal_owner(path, signum):
    """Send SIGNUM to the process that owns the pidfile PATH. Return its pid."""
    pid = live_pid(path)
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        raise NotRunning("%s: process %d is not running" % (path, pid))
    return pid
