"""The master's HTTP endpoint: /metrics for Prometheus and /healthz.

The server runs in a thread of the master and reads the job records through
a callable, so it does not wait for the master's loop. This module opens no
database connection: every figure comes from the workers' reports.
"""

import http.server
import json
import logging
import socket
import threading
import time
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from cubemux import __version__, metrics

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"


class MonitoringServer(http.server.ThreadingHTTPServer):
    """Serves /metrics and /healthz from the jobs that READ_JOBS returns."""

    daemon_threads = True

    def __init__(self, address, read_jobs):
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.read_jobs = read_jobs
        self.registry = CollectorRegistry()
        self.registry.register(metrics.JobCollector(read_jobs))
        self.thread = None
        super().__init__(address, _Handler)

    @property
    def url(self):
        host, port = self.server_address[:2]
        if ":" in host:
            host = "[%s]" % host
        return "http://%s:%d" % (host, port)

    def start(self):
        self.thread = threading.Thread(target=self.serve_forever, daemon=True,
                                       name="cubemux-http")
        self.thread.start()

    def stop(self):
        """Stop serving and close the listening socket."""
        if self.thread is not None:
            self.shutdown()
            self.thread.join()
            self.thread = None
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "cubemux/" + __version__

    def do_GET(self):
        path = urlsplit(self.path).path
        try:
            if path == "/metrics":
                self._send_metrics()
            elif path == "/healthz":
                self._send_health()
            else:
                self._send(404, "text/plain; charset=utf-8",
                           b"not found: use /metrics or /healthz\n")
        except Exception:
            log.exception("serving %s failed", path)
            self._send(500, "text/plain; charset=utf-8",
                       b"internal error, see the master's log\n")

    def _send_metrics(self):
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        self._send(200, content_type, encoder(self.server.registry))

    def _send_health(self):
        healthy, body = metrics.health(self.server.read_jobs(), time.time())
        data = (json.dumps(body, indent=2) + "\n").encode()
        self._send(200 if healthy else 503, "application/json", data)

    def _send(self, status, content_type, data):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        log.debug("%s %s", self.address_string(), format % args)


def start_server(host, port, read_jobs):
    """Bind HOST:PORT and serve in a thread. Return the MonitoringServer.

    PORT 0 picks a free port, and the server's ``url`` contains it. Raise
    OSError when the address cannot be bound.
    """
    server = MonitoringServer((host, port), read_jobs)
    server.start()
    log.info("serving metrics on %s/metrics and health on %s/healthz",
             server.url, server.url)
    return server
