"""The operating system calls of the master, in one place so tests can replace them."""

import os
import select
import time


class SystemAPI:
    """fork, kill, waitpid, the monotonic clock and the wait for file descriptors."""

    def fork(self):
        return os.fork()

    def kill(self, pid, signum):
        os.kill(pid, signum)

    def waitpid(self, pid, options):
        return os.waitpid(pid, options)

    def monotonic(self):
        """Return the clock that timeouts and backoff delays are measured on."""
        return time.monotonic()

    def poll(self, fds, timeout):
        """Wait up to TIMEOUT seconds until one of FDS is readable.

        Return the readable descriptors, or an empty list after the timeout
        or a signal.
        """
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        try:
            events = poller.poll(max(0, timeout) * 1000.0)
        except InterruptedError:
            return []
        return [fd for fd, _mask in events]
