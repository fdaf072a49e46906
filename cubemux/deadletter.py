"""Dead letters: bad events stored whole in the destination, with their reason.

With ``on_error = deadletter`` a batch applies every good event and stores
each bad one in cubemux.deadletter, in the batch's own transaction, so the
table and the completed tick always agree. ``cubemux deadletter FILE``
lists them and ``cubemux replay FILE`` applies them once the cause is fixed.
"""

import logging

from psycopg2 import sql
from psycopg2.extras import execute_values

log = logging.getLogger(__name__)

_SCHEMA_SQL = """
create schema if not exists cubemux;

create table if not exists cubemux.deadletter (
    id bigserial primary key,
    job_name text not null,
    queue_name text not null,
    consumer_name text not null,
    batch_id bigint,
    tick_id bigint,
    batch_end timestamptz,
    ev_id bigint not null,
    ev_time timestamptz,
    ev_txid bigint,
    ev_retry integer,
    ev_type text,
    ev_data text,
    ev_extra1 text,
    ev_extra2 text,
    ev_extra3 text,
    ev_extra4 text,
    reason text not null,
    stored_at timestamptz not null default now(),
    replayed_at timestamptz,
    unique (queue_name, consumer_name, ev_id)
);
"""

EVENT_COLUMNS = ("ev_id", "ev_time", "ev_txid", "ev_retry", "ev_type", "ev_data",
                 "ev_extra1", "ev_extra2", "ev_extra3", "ev_extra4")


def install(conn):
    """Create the dead-letter table if missing, and commit."""
    with conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(hashtext('cubemux.deadletter'))")
        cur.execute(_SCHEMA_SQL)
    conn.commit()


def fetch_events(src, batch_id, reasons):
    """Return the whole source events of REASONS' ids in the batch, in ev_id order."""
    with src.cursor() as cur:
        cur.execute(
            sql.SQL("select {} from pgq.get_batch_events(%s) where ev_id = any(%s)"
                    " order by ev_id").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in EVENT_COLUMNS)),
            (batch_id, sorted(reasons)))
        return cur.fetchall()


def store(dst, job, batch, events, reasons):
    """Insert EVENTS (rows of EVENT_COLUMNS) with their reasons, without committing."""
    rows = [
        (job.job_name, job.pgq_queue_name, job.pgq_consumer_id, batch.batch_id,
         batch.tick_id, batch.batch_end, *event, reasons[event[0]])
        for event in events
    ]
    columns = ("job_name", "queue_name", "consumer_name", "batch_id", "tick_id",
               "batch_end", *EVENT_COLUMNS, "reason")
    statement = sql.SQL(
        "insert into cubemux.deadletter ({}) values %s"
        " on conflict (queue_name, consumer_name, ev_id) do nothing").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    with dst.cursor() as cur:
        execute_values(cur, statement.as_string(dst), rows)
    for event in events:
        log.warning("stored event %d of table %s in cubemux.deadletter: %s",
                    event[0], event[6], reasons[event[0]])


def pending(dst, job, include_replayed=False, ids=None):
    """Return the job's dead letters as dicts, oldest event first."""
    query = sql.SQL(
        "select id, batch_id, batch_end, {events}, reason, stored_at, replayed_at"
        " from cubemux.deadletter where queue_name = %s and consumer_name = %s"
        " {replayed} {chosen} order by ev_id").format(
            events=sql.SQL(", ").join(sql.Identifier(c) for c in EVENT_COLUMNS),
            replayed=sql.SQL("" if include_replayed else "and replayed_at is null"),
            chosen=sql.SQL("and id = any(%s)" if ids else ""))
    params = [job.pgq_queue_name, job.pgq_consumer_id]
    if ids:
        params.append(list(ids))
    with dst.cursor() as cur:
        cur.execute("select to_regclass('cubemux.deadletter') is not null")
        if not cur.fetchone()[0]:
            return []
        cur.execute(query, params)
        names = [column.name for column in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def mark_replayed(dst, ids):
    with dst.cursor() as cur:
        cur.execute("update cubemux.deadletter set replayed_at = now()"
                    " where id = any(%s)", (list(ids),))
