"""Detaching a process from its terminal (the -d switch)."""

import os
import sys

# The line the daemon writes into the readiness pipe once it runs.
_READY = b"ready\n"


def daemonize():
    """Detach this process: fork twice, start a new session, close the terminal.

    The calling process waits until the daemon calls the returned function,
    then exits with code 0, or with code 1 when the daemon exited first. So
    the caller's exit signals to a service manager (systemd's Type=forking) that
    the daemon is up and its pidfile is written. Only the daemon returns.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    first = os.fork()
    if first:
        os.close(write_fd)
        os.waitpid(first, 0)
        os._exit(_wait_until_ready(read_fd))

    os.close(read_fd)
    os.setsid()
    if os.fork():
        os._exit(0)
    _redirect_stdio()

    def report_ready():
        try:
            os.write(write_fd, _READY)
        finally:
            os.close(write_fd)

    return report_ready


def _wait_until_ready(read_fd):
    data = b""
    while True:
        chunk = os.read(read_fd, 64)
        if not chunk:
            break
        data += chunk
    if data == _READY:
        return 0
    print("cubemux: the daemon exited during start-up; see its log for the "
          "reason", file=sys.stderr)
    return 1


def _redirect_stdio():
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
