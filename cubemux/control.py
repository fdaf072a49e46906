"""The master's control socket: a local-only unix socket for status and restart.

A client connects, sends one JSON object on one line, such as
``{"command": "status"}`` or ``{"command": "restart", "job": "sales"}``,
and reads one JSON object back. Every response has ``ok``; a failed request
has ``error`` too. The socket file is readable and writable by its owner
only.
"""

import errno
import json
import logging
import os
import socket
import socketserver
import stat
import threading

from cubemux.errors import EXIT_CRASH, EXIT_USAGE, CubemuxError

log = logging.getLogger(__name__)

SOCKET_NAME = "cubemux.sock"

# Seconds that either side waits for the other before giving up.
TIMEOUT = 10.0

MAX_REQUEST_BYTES = 64 * 1024

# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_PATH_BYTES = 107


class ControlError(CubemuxError):
    """The control socket cannot be bound, reached or read."""

    exit_code = EXIT_CRASH


class SocketInUse(ControlError):
    """Another master listens on the control socket."""

    exit_code = EXIT_USAGE


def default_socket_path(pidfile=None):
    """Return the control socket path used when --control-socket is not given.

    Next to the pidfile when there is one (``x.pid`` gives ``x.sock``), else
    ``cubemux.sock`` in $XDG_RUNTIME_DIR/cubemux, in /run/cubemux for root,
    or in /tmp/cubemux-UID.
    """
    if pidfile:
        return os.path.splitext(os.path.abspath(pidfile))[0] + ".sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "cubemux", SOCKET_NAME)
    if os.geteuid() == 0:
        return os.path.join("/run/cubemux", SOCKET_NAME)
    return os.path.join("/tmp/cubemux-%d" % os.getuid(), SOCKET_NAME)


def _prepare_directory(directory):
    """Create DIRECTORY for the socket, or check that a shared one is safe."""
    try:
        os.makedirs(directory, mode=0o700)
        return
    except FileExistsError:
        pass
    if not directory.startswith("/tmp/"):
        return
    # Anyone can create a folder in /tmp, so it must be this user's own.
    info = os.lstat(directory)
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()
            or info.st_mode & 0o022):
        raise ControlError(
            "%s is not a folder that only this user can write to: remove it "
            "or give --control-socket" % directory)


def _check_length(path):
    size = len(os.fsencode(path))
    if size > MAX_PATH_BYTES:
        raise ControlError(
            "control socket path %s is %d bytes long, more than the limit of "
            "%d: give a shorter --control-socket" % (path, size, MAX_PATH_BYTES))


def _remove_stale(path):
    """Remove a socket file that no process listens on any more."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlError("%s exists and is not a socket: remove it or give "
                           "another --control-socket" % path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(TIMEOUT)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        return
    finally:
        probe.close()
    raise SocketInUse("another master listens on the control socket %s: stop it "
                      "or give another --control-socket" % path)


class _Handler(socketserver.StreamRequestHandler):
    timeout = TIMEOUT

    def handle(self):
        line = self.rfile.readline(MAX_REQUEST_BYTES)
        if not line:
            # A probe that only checks that a master listens.
            return
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            response = {"ok": False, "error": "invalid request: send one JSON "
                      "object on one line"}
        else:
            try:
                response = self.server.handle_request_dict(request)
            except Exception as error:
                log.exception("control request %r failed", request.get("command"))
                response = {"ok": False, "error": "the request failed: %s" % error}
        data = json.dumps(response, separators=(",", ":")) + "\n"
        try:
            self.wfile.write(data.encode())
        except OSError as error:
            log.debug("control client went away before the response: %s", error)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False


class ControlServer:
    """The listening control socket of a master, served from a thread.

    The socket is bound in the constructor, so a path in use fails before a
    daemon detaches. serve() starts the thread, which calls HANDLER with
    each request dict and sends back the dict that HANDLER returns.
    """

    def __init__(self, path):
        self.path = os.path.abspath(path)
        _check_length(self.path)
        _prepare_directory(os.path.dirname(self.path))
        _remove_stale(self.path)
        old_umask = os.umask(0o177)
        try:
            self.server = _Server(self.path, _Handler)
        except OSError as error:
            raise ControlError("cannot listen on the control socket %s: %s"
                               % (self.path, error.strerror or error))
        finally:
            os.umask(old_umask)
        self.inode = os.stat(self.path).st_ino
        self.thread = None

    def fileno(self):
        return self.server.fileno()

    def serve(self, handler):
        self.server.handle_request_dict = handler
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.2},
                                       daemon=True, name="cubemux-control")
        self.thread.start()
        log.info("listening on the control socket %s", self.path)

    def close(self):
        """Stop serving, close the socket and remove its file."""
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join()
            self.thread = None
        self.server.server_close()
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass


def send_request(path, request, timeout=TIMEOUT):
    """Send REQUEST (a dict) to the master listening on PATH. Return its response.

    Raise ControlError when no master listens there or the response is invalid.
    """
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        try:
            client.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(
                "no master is listening on the control socket %s: is it running? "
                "Give the master's --control-socket or --pidfile" % path) from None
        except PermissionError:
            raise ControlError("permission denied on the control socket %s: run "
                               "this command as the master's user" % path) from None
        client.sendall((json.dumps(request) + "\n").encode())
        client.shutdown(socket.SHUT_WR)
        data = _read_all(client)
    except socket.timeout:
        raise ControlError("the master did not respond on %s within %.0f s"
                           % (path, timeout)) from None
    except OSError as error:
        if error.errno not in (errno.ECONNRESET, errno.EPIPE):
            raise
        raise ControlError("the master closed the control connection on %s: "
                           "it may be stopping" % path) from None
    finally:
        client.close()
    try:
        response = json.loads(data)
    except ValueError:
        raise ControlError("invalid response from the master on %s: %r"
                           % (path, data[:200])) from None
    return response


def _read_all(client):
    chunks = []
    while True:
        chunk = client.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
