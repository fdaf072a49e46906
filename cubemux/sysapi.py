"""The operating system calls of the master, in one place so tests can replace them."""

import os
import time


class SystemAPI:
    """fork, kill, waitpid and the clock."""

    def fork(self):
        return os.fork()

    def kill(self, pid, signum):
        os.kill(pid, signum)

    def waitpid(self, pid, options):
        return os.waitpid(pid, options)

    def monotonic(self):
        return time.monotonic()
