"""Database connections: opening, aging and masking of connection strings."""

import logging
import re
import time

import psycopg2
import psycopg2.extensions

log = logging.getLogger(__name__)

_PASSWORD_PAIR = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|(?:\\.|\S)+)",
                            re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*(@)")


def mask_dsn(dsn):
    """Return DSN with any password replaced by ``***``, safe to log."""
    if not dsn:
        return dsn
    masked = _PASSWORD_PAIR.sub(r"\1***", dsn)
    return _URI_PASSWORD.sub(r"\1***\2", masked)


def mask_text(text, dsns):
    """Return TEXT with the passwords of DSNS masked, for error messages."""
    for dsn in dsns:
        if not dsn:
            continue
        try:
            password = psycopg2.extensions.parse_dsn(dsn).get("password")
        except psycopg2.ProgrammingError:
            password = None
        if password:
            text = text.replace(password, "***")
    return text


class Connection:
    """A psycopg2 connection that is reopened when it grows older than LIFETIME.

    ``NAME`` is the role of the connection in log lines (source, destination).
    """

    def __init__(self, dsn, name, lifetime, setup=None):
        self.dsn = dsn
        self.name = name
        self.lifetime = lifetime
        self.setup = setup
        self.conn = None
        self.opened_at = 0.0

    def get(self):
        """Return an open connection, opening it first when needed."""
        if self.conn is not None and self.conn.closed:
            self.conn = None
        if self.conn is None:
            self.conn = psycopg2.connect(self.dsn, application_name="cubemux")
            self.opened_at = time.monotonic()
            log.debug("connected to the %s database %s", self.name, mask_dsn(self.dsn))
            if self.setup is not None:
                self.setup(self.conn)
        return self.conn

    def refresh(self):
        """Close the connection if it is older than the lifetime."""
        if self.conn is None or not self.lifetime:
            return
        if time.monotonic() - self.opened_at >= self.lifetime:
            log.debug("reopening the %s connection after %.0f s",
                      self.name, self.lifetime)
            self.close()

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg2.Error:
                pass
            self.conn = None
