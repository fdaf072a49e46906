"""A per-statement consumer that applies events the way cube_dispatcher did.

skytools 2's cube_dispatcher turned each event into SQL text with its values
quoted as literals: in keep_latest a DELETE of the row's key for every event
and an INSERT for every I and U event, in keep_all only the INSERT. It sent
the statements in blocks of about a hundred per round trip. This class does
the same, so the benchmark can compare cubemux with it on the same batch.

It reads the batch through a cursor, in ev_id order, and decodes with the
same code as cubemux's worker, so the comparison measures the apply alone.
(The original read the whole batch into memory first.) Building SQL from quoted
literals is deliberate here: it is the method under comparison.
"""

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from cubemux import pgq, tracking
from cubemux.events import decode_event
from cubemux.partitions import partition_name

BLOCK_STATEMENTS = 100

_PARTITION_DDL = {
    "keep_all": "create table {part} (like {parent} including defaults)",
    "keep_latest": "create table {part} (like {parent} including defaults);"
                   " alter table only {part} add primary key ({keys})",
}


def quote_literal(value):
    """Return VALUE as an SQL literal: NULL, '...' or E'...' with backslashes."""
    if value is None:
        return "null"
    quoted = value.replace("'", "''")
    if "\\" in quoted:
        return "E'%s'" % quoted.replace("\\", "\\\\")
    return "'%s'" % quoted


class ReferenceConsumer:
    """Applies one batch with one statement per event change."""

    def __init__(self, src_db, dst_db, queue, consumer, mode):
        self.src = psycopg2.connect(src_db)
        self.dst = psycopg2.connect(dst_db)
        self.queue = queue
        self.consumer = consumer
        self.mode = mode
        self.partitions = {}
        self.block = []

    def close(self):
        self.src.close()
        self.dst.close()

    def run_batch(self):
        """Apply the next batch and finish it. Return the number of events."""
        batch = pgq.next_batch(self.src, self.queue, self.consumer, "YYYY_MM_DD")
        if batch is None:
            raise RuntimeError("consumer %s has no batch" % self.consumer)
        tracking.install_schema(self.dst)

        events = 0
        cur = self.dst.cursor()
        # One statement after another is right only in ev_id order.
        for ev_id, _time, ev_type, ev_data, extra1, extra2 in pgq.iter_events(
                self.src, batch.batch_id, ordered=True):
            event = decode_event(ev_id, ev_type, ev_data, extra1, extra2)
            table = self._partition(cur, event, batch.suffix)
            self._add_statements(table, event)
            if len(self.block) >= BLOCK_STATEMENTS:
                self._send(cur)
            events += 1
        self._send(cur)

        tracking.set_last_tick(self.dst, self.consumer, batch.tick_id)
        self.dst.commit()
        pgq.finish_batch(self.src, batch.batch_id)
        return events

    def _add_statements(self, table, event):
        if self.mode == "keep_latest":
            condition = " and ".join(
                "%s = %s" % (self._ident(key), quote_literal(
                    event.values[event.columns.index(key)]))
                for key in event.pkeys)
            self.block.append("delete from %s where %s;" % (table, condition))
        if event.op != "D":
            names = ", ".join(self._ident(name) for name in event.columns)
            values = ", ".join(quote_literal(value) for value in event.values)
            self.block.append("insert into %s (%s) values (%s);"
                              % (table, names, values))

    def _ident(self, name):
        return psycopg2.extensions.quote_ident(name, self.dst)

    def _send(self, cur):
        if self.block:
            cur.execute("\n".join(self.block))
            self.block = []

    def _partition(self, cur, event, suffix):
        """Return the quoted name of the event's partition, creating it when missing."""
        key = (event.schema, event.table)
        quoted = self.partitions.get(key)
        if quoted is not None:
            return quoted
        name = partition_name(event.table, suffix)
        part = sql.Identifier(event.schema, name)
        cur.execute("select to_regclass(%s)", (part.as_string(self.dst),))
        if cur.fetchone()[0] is None:
            cur.execute(sql.SQL(_PARTITION_DDL[self.mode]).format(
                part=part, parent=sql.Identifier(event.schema, event.table),
                keys=sql.SQL(", ").join(map(sql.Identifier, event.pkeys))))
        quoted = part.as_string(self.dst)
        self.partitions[key] = quoted
        return quoted
