"""Source side: the PgQ consumer calls on the queue database."""

import dataclasses
import logging
import queue
import threading

import psycopg2.extensions
from psycopg2 import sql

log = logging.getLogger(__name__)

CURSOR_NAME = "cubemux_batch"
FETCH_SIZE = 2000

# Chunks that iter_events requests before the caller needs them. The thread
# that fetches them needs the GIL to convert each chunk, so one chunk ahead
# often arrives late.
FETCH_AHEAD = 2

# pgq.batch_event_sql (pgq 3.x) ends the query it builds with this clause.
_ORDER_BY_EV_ID = " order by 1"


@dataclasses.dataclass(frozen=True)
class Batch:
    """An open PgQ batch and the ticks that bound it."""

    batch_id: int
    tick_id: int
    prev_tick_id: int
    batch_end: object
    suffix: str | None


def register(conn, queue, consumer):
    """Register CONSUMER on QUEUE. Return True when the registration is new."""
    with conn.cursor() as cur:
        cur.execute("select pgq.register_consumer(%s, %s)", (queue, consumer))
        created = cur.fetchone()[0] == 1
    conn.commit()
    return created


def register_at(conn, queue, consumer, tick_id):
    """Move CONSUMER's position on QUEUE to TICK_ID, dropping any open batch."""
    with conn.cursor() as cur:
        cur.execute("select pgq.register_consumer_at(%s, %s, %s)",
                    (queue, consumer, tick_id))
    conn.commit()


def next_batch(conn, queue, consumer, dateformat):
    """Open the next batch. Return a Batch, or None when there is none.

    The partition suffix is formatted by the source server with
    ``to_char(batch_end, dateformat)`` in the session's time zone, as the
    original cube_dispatcher did.
    """
    with conn.cursor() as cur:
        cur.execute(
            "select batch_id, cur_tick_id, prev_tick_id, cur_tick_time,"
            " case when %s = '' then null else to_char(cur_tick_time, %s) end"
            " from pgq.next_batch_info(%s, %s)",
            (dateformat, dateformat, queue, consumer))
        row = cur.fetchone()
    conn.commit()
    if row is None or row[0] is None:
        return None
    return Batch(*row)


def iter_events(conn, batch_id, fetch_size=FETCH_SIZE, ordered=False,
                with_time=True):
    """Yield the batch's events, streamed through a cursor.

    Each item is (ev_id, ev_time, ev_type, ev_data, ev_extra1, ev_extra2).
    Without WITH_TIME, ev_time is None: converting it costs about a third
    of the client's time per fetched row.
    With ORDERED the events come in ev_id order, as pgq.get_batch_cursor
    returns them. Otherwise they come in the order the server reads them,
    which spares the server a sort of the whole batch (on disk for a large
    batch). The set-based apply needs no order, because it orders the
    versions of a key by ev_id itself.

    A thread of its own fetches the next chunks while the caller works on
    the current one. The cursor lives in the current transaction, so
    nothing may use CONN until the iteration ends or the generator is
    closed. A caller that stops early must close the generator before it
    rolls back CONN: closing waits for the fetches already asked for, and a
    fetch that ran after the rollback would fail and leave CONN in an
    aborted transaction.
    """
    with conn.cursor() as cur:
        cur.execute("select pgq.batch_event_sql(%s)", (batch_id,))
        query = cur.fetchone()[0]
        if not ordered and query.endswith(_ORDER_BY_EV_ID):
            query = query[:-len(_ORDER_BY_EV_ID)]
        cur.execute(sql.SQL(
            "declare {} no scroll cursor for select ev_id, {}, ev_type,"
            " ev_data, ev_extra1, ev_extra2 from ({}) e").format(
                sql.Identifier(CURSOR_NAME),
                sql.SQL("ev_time" if with_time else "null"), sql.SQL(query)))

    fetcher = _Fetcher(conn, fetch_size)
    try:
        for _ in range(FETCH_AHEAD):
            fetcher.request()
        while True:
            rows = fetcher.result()
            more = len(rows) == fetch_size
            if more:
                fetcher.request()
            yield from rows
            if not more:
                break
    finally:
        fetcher.stop()
    with conn.cursor() as cur:
        cur.execute(sql.SQL("close {}").format(sql.Identifier(CURSOR_NAME)))


class _Fetcher:
    """Runs FETCH on the batch's cursor in a thread, one chunk per request.

    psycopg2 holds the connection's lock for the whole FETCH, so a rollback
    from the caller's thread waits until the FETCH is over.
    """

    def __init__(self, conn, fetch_size):
        self.conn = conn
        self.statement = sql.SQL("fetch {} from {}").format(
            sql.Literal(fetch_size), sql.Identifier(CURSOR_NAME)).as_string(conn)
        self.requests = queue.SimpleQueue()
        self.results = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name="cubemux-fetch")
        self.thread.start()

    def request(self):
        self.requests.put(True)

    def stop(self):
        """End the thread after the requests so far, and wait for it."""
        self.requests.put(False)
        self.thread.join()

    def result(self):
        """Return the rows of the oldest request, or raise its error."""
        rows = self.results.get()
        if isinstance(rows, BaseException):
            raise rows
        return rows

    def _run(self):
        cur = self.conn.cursor()
        while self.requests.get():
            # A caller that failed without closing the generator may have
            # rolled back or closed the connection. A FETCH now would fail in
            # a new transaction and leave it aborted, so the thread ends.
            # NOTE: the check and the FETCH are not atomic, so a rollback in
            # between still lets that FETCH fail. Closing the generator
            # first, as the iter_events docstring requires, avoids both.
            if (self.conn.closed or self.conn.info.transaction_status
                    != psycopg2.extensions.TRANSACTION_STATUS_INTRANS):
                self.results.put(RuntimeError(
                    "the transaction of the batch ended while its events were read"))
                return
            try:
                cur.execute(self.statement)
                self.results.put(cur.fetchall())
            except BaseException as error:  # handed to the caller's thread
                self.results.put(error)
                return


def finish_batch(conn, batch_id):
    """Close the batch on the queue and commit."""
    with conn.cursor() as cur:
        cur.execute("select pgq.finish_batch(%s)", (batch_id,))
    conn.commit()


def server_timezone(conn):
    with conn.cursor() as cur:
        cur.execute("show timezone")
        return cur.fetchone()[0]


def queue_figures(conn, queue, consumer):
    """Return the consumer's lag figures and the queue's ticker lag, in seconds.

    The keys are consumer_lag_seconds, pending_events, last_seen_seconds and
    ticker_lag_seconds; a value is None when PgQ has no figure for it.
    """
    with conn.cursor() as cur:
        cur.execute(
            "select extract(epoch from c.lag), c.pending_events,"
            " extract(epoch from c.last_seen), extract(epoch from q.ticker_lag)"
            " from pgq.get_queue_info(%s) q"
            " left join pgq.get_consumer_info(%s, %s) c on true",
            (queue, queue, consumer))
        row = cur.fetchone()
    conn.commit()
    names = ("consumer_lag_seconds", "pending_events", "last_seen_seconds",
             "ticker_lag_seconds")
    if row is None:
        return dict.fromkeys(names)
    return {name: (float(value) if value is not None else None)
            for name, value in zip(names, row)}


def _queue_lock_key(queue, consumer):
    return "cubemux.queue:%s/%s" % (queue, consumer)


def try_queue_lock(conn, queue, consumer):
    """Take the session advisory lock of QUEUE and CONSUMER if it is free.

    Only the worker whose session has it applies the queue. Return True when
    this session has it now. Commits.
    """
    with conn.cursor() as cur:
        cur.execute("select pg_try_advisory_lock(hashtext(%s))",
                    (_queue_lock_key(queue, consumer),))
        acquired = cur.fetchone()[0]
    conn.commit()
    return acquired


def unregister(conn, queue, consumer):
    """Remove CONSUMER from QUEUE. Return True when it was registered."""
    with conn.cursor() as cur:
        cur.execute("select pgq.unregister_consumer(%s, %s)", (queue, consumer))
        removed = cur.fetchone()[0] > 0
    conn.commit()
    return removed
