"""Destination side: the completed tick, kept in a pgq_ext-compatible table.

A batch's rows and its tick commit in one destination transaction. The
functions are those of skytools' pgq_ext schema, so a job moved from
cube_dispatcher keeps its position, and pgq_ext installed by skytools works
as it is.
"""

import logging

from cubemux.errors import LostPosition

log = logging.getLogger(__name__)

APPLY = "apply"
SKIP = "skip"

# Each statement is idempotent, and a function is created only when missing,
# so an installed pgq_ext (skytools 2 or 3, or the extension) stays as it is.
_SCHEMA_SQL = """
create schema if not exists pgq_ext;

create table if not exists pgq_ext.completed_tick (
    consumer_id text not null,
    subconsumer_id text not null default '',
    last_tick_id bigint not null,
    primary key (consumer_id, subconsumer_id)
);

do $body$
begin
    if to_regprocedure('pgq_ext.get_last_tick(text)') is null then
        create function pgq_ext.get_last_tick(a_consumer text)
        returns int8 language sql stable as $f$
            select last_tick_id from pgq_ext.completed_tick
             where consumer_id = a_consumer and subconsumer_id = ''
        $f$;
    end if;

    if to_regprocedure('pgq_ext.set_last_tick(text, bigint)') is null then
        create function pgq_ext.set_last_tick(a_consumer text, a_tick_id bigint)
        returns int4 language plpgsql as $f$
        begin
            if a_tick_id is null then
                delete from pgq_ext.completed_tick
                 where consumer_id = a_consumer and subconsumer_id = '';
                return 1;
            end if;
            update pgq_ext.completed_tick set last_tick_id = a_tick_id
             where consumer_id = a_consumer and subconsumer_id = '';
            if not found then
                insert into pgq_ext.completed_tick (consumer_id, last_tick_id)
                values (a_consumer, a_tick_id);
            end if;
            return 1;
        end;
        $f$;
    end if;
end
$body$;
"""


def install_schema(conn):
    """Install the tracking schema and functions if missing, and commit."""
    with conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(hashtext('cubemux.pgq_ext'))")
        cur.execute(_SCHEMA_SQL)
    conn.commit()


def schema_installed(conn):
    with conn.cursor() as cur:
        cur.execute(
            "select to_regprocedure('pgq_ext.get_last_tick(text)') is not null"
            " and to_regprocedure('pgq_ext.set_last_tick(text, bigint)') is not null")
        return cur.fetchone()[0]


def get_last_tick(conn, consumer):
    with conn.cursor() as cur:
        cur.execute("select pgq_ext.get_last_tick(%s)", (consumer,))
        return cur.fetchone()[0]


def set_last_tick(conn, consumer, tick_id):
    """Store TICK_ID as CONSUMER's position. None removes the position."""
    with conn.cursor() as cur:
        cur.execute("select pgq_ext.set_last_tick(%s, %s::bigint)", (consumer, tick_id))


def decide(dst_tick, batch, job):
    """Return APPLY or SKIP for BATCH given the destination's tick.

    Raise LostPosition when the tick matches neither end of the batch.
    """
    if dst_tick is None or dst_tick == batch.prev_tick_id:
        return APPLY
    if dst_tick == batch.tick_id:
        return SKIP
    raise LostPosition(
        "lost position: the batch covers ticks %d..%d but the destination "
        "has tick %d for consumer %s. If the destination is right, run "
        "'cubemux rewind %s' to move the queue position to tick %d; if the "
        "queue is right, run 'cubemux reset %s' to clear the destination "
        "position (rows may then be missing or doubled)"
        % (batch.prev_tick_id, batch.tick_id, dst_tick, job.pgq_consumer_id,
           job.path, dst_tick, job.path))
