"""Replaying dead letters into the destination once their cause is fixed."""

import logging

from psycopg2 import sql

from cubemux import deadletter, pgq
from cubemux.apply import BatchWriter
from cubemux.errors import CubemuxError, EventError
from cubemux.events import decode_event
from cubemux.routing import Router, partition_zone
from cubemux.worker import TRUNCATE_TYPE, Worker

log = logging.getLogger(__name__)


def _suffix(src, dateformat, batch_end):
    """Return to_char(batch_end, dateformat) as the source server formats it."""
    if not dateformat:
        return None
    with src.cursor() as cur:
        cur.execute("select to_char(%s::timestamptz, %s)", (batch_end, dateformat))
        suffix = cur.fetchone()[0]
    src.commit()
    return suffix


def _key_has_row(dst, event, name):
    """Return True when partition NAME has a row with EVENT's key."""
    if not event.pkeys or any(key not in event.columns for key in event.pkeys):
        return False
    with dst.cursor() as cur:
        cur.execute("select to_regclass(%s) is not null",
                    (sql.Identifier(event.schema, name).as_string(dst),))
        if not cur.fetchone()[0]:
            return False
        # The key values go in as sql.Literal, because with parameters
        # psycopg2 would read a % in a column name as a placeholder.
        matches = sql.SQL(" and ").join(
            sql.SQL("{} = {}").format(
                sql.Identifier(key),
                sql.Literal(event.value(event.columns.index(key))))
            for key in event.pkeys)
        cur.execute(sql.SQL("select exists (select 1 from {} where {})").format(
            sql.Identifier(event.schema, name), matches))
        return cur.fetchone()[0]


def replay(job, ids=None, force=False):
    """Apply the job's pending dead letters in one transaction. Return their count.

    The events go where they would have gone in their batch: batch_time jobs
    use the stored batch end. Any failure rolls everything back and raises,
    naming the event. Under keep_latest an event whose key already has a row
    in its partition is refused unless FORCE, because that row may be a newer
    version than the dead letter.
    """
    worker = Worker(job)
    try:
        src = worker.src.get()
        dst = worker.dst.get()
        rows = deadletter.pending(dst, job, ids=ids)
        missing = sorted(set(ids or ()) - {row["id"] for row in rows})
        if missing:
            raise CubemuxError(
                "no pending dead letter of this job has id %s: run 'cubemux "
                "deadletter FILE' to list the ids (the first column, not the "
                "event id); --all also lists the replayed ones"
                % ", ".join(map(str, missing)))
        if not rows:
            return 0
        router = Router(job, partition_zone(job, worker.timezone), worker.partitioner)
        writer = BatchWriter(dst, job.mode, worker.partitioner,
                             on_new_column=job.on_new_column)
        for row in rows:
            batch = pgq.Batch(row["batch_id"], None, None, row["batch_end"],
                              _suffix(src, job.dateformat, row["batch_end"]))
            router.start_batch(batch)
            if row["ev_type"] == TRUNCATE_TYPE and job.on_truncate == "ignore":
                continue
            event = decode_event(row["ev_id"], row["ev_type"], row["ev_data"],
                                 row["ev_extra1"], row["ev_extra2"])
            name = router.route(event, row["ev_time"])
            if name is None:
                continue
            if job.mode == "keep_latest" and not force and _key_has_row(dst, event,
                                                                        name):
                raise EventError(
                    "the key of this dead letter has a row in %s.%s, which may be "
                    "a newer version: check it, then replay with --force to "
                    "replace it" % (event.schema, name), event.ev_id,
                    event.qualified_table)
            writer.add(event, name)
        writer.finish()
        deadletter.mark_replayed(dst, [row["id"] for row in rows])
        dst.commit()
        log.info("replayed %d dead letters", len(rows))
        return len(rows)
    except BaseException:
        if worker.dst.conn is not None:
            worker.dst.conn.rollback()
        raise
    finally:
        worker.close()
