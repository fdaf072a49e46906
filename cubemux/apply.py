"""Set-based apply of one batch's events into the destination.

Rows are buffered per target table and per column set, then sent with COPY.
``keep_all`` copies every I and U version straight into the partition.
``keep_latest`` copies every event into a temporary stage table, then one
DELETE removes the touched keys from the partition and one INSERT per column
set adds the last version of each key whose last event is not a D. Both
equal applying the events one at a time in ev_id order.
"""

import dataclasses
import logging

import psycopg2
from psycopg2 import sql

from cubemux import copytext
from cubemux.copysend import CopyJob, CopySender
from cubemux.errors import EventError

log = logging.getLogger(__name__)

# Buffered events per batch before they are sent. Events stay decoded until
# COPY encodes them, so memory grows with this number times the row size.
FLUSH_EVENTS = 5000

# Rows that one read() of the COPY input encodes. psycopg2 sends each read
# before it calls the next, so the server parses them while the next rows
# are encoded.
ROWS_PER_READ = 256

# (parent table, columns) whose dropped values this process has logged.
_WARNED_DROPS = set()

# Extra columns of a keep_latest stage table.
EV_ID_COLUMN = "cubemux_ev_id"
OP_COLUMN = "cubemux_op"
COLSET_COLUMN = "cubemux_colset"


@dataclasses.dataclass
class Counts:
    """Counts of one batch's work, for logs and metrics."""

    events: dict = dataclasses.field(default_factory=lambda: {"I": 0, "U": 0, "D": 0})
    inserted: dict = dataclasses.field(default_factory=dict)
    deleted: dict = dataclasses.field(default_factory=dict)
    partitions_created: int = 0
    columns_added: int = 0
    values_dropped: int = 0
    dead_letters: int = 0
    events_skipped: int = 0

    def add_rows(self, field, table, count):
        bucket = getattr(self, field)
        bucket[table] = bucket.get(table, 0) + count


class _Buffer:
    """Events of one column set waiting for COPY."""

    __slots__ = ("columns", "colset", "events")

    def __init__(self, columns, colset):
        self.columns = columns
        self.colset = colset
        self.events = []

    def take(self):
        """Return the buffered events and empty the buffer."""
        events = self.events
        self.events = []
        return events


class _CopyInput:
    """COPY input that encodes buffered events as psycopg2 reads it.

    Under keep_latest each row ends with its ev_id, operation and column set.
    """

    def __init__(self, events, colset=None):
        self.events = events
        self.colset = colset
        self.position = 0

    def read(self, size):
        start = self.position
        self.position = start + ROWS_PER_READ
        return encode_rows(self.events[start:self.position], self.colset)


def encode_rows(events, colset=None):
    """Return the COPY text of EVENTS. A COLSET adds the stage's columns."""
    encode = copytext.encode_fields
    if colset is None:
        return "".join([(encode(event.values) if event.line is None else event.line)
                        + "\n" for event in events])
    tail = "\t%d\n" % colset
    return "".join(["%s\t%d\t%s%s" % (
        encode(event.values) if event.line is None else event.line,
        event.ev_id, event.op, tail) for event in events])


class _Target:
    """One destination table of the batch: a partition, or the parent itself."""

    def __init__(self, schema, parent, name, pkeys, columns):
        self.schema = schema
        self.parent = parent
        self.name = name
        self.pkeys = pkeys
        self.columns = columns
        self.buffers = {}
        self.stage = None
        # Rows that keep_all has copied into the table in this batch.
        self.copied = 0
        # Column sets whose unknown columns on_new_column = ignore drops:
        # {columns: (indexes kept, columns kept)}.
        self.reshape = {}

    @property
    def parent_label(self):
        return "%s.%s" % (self.schema, self.parent)

    def identifier(self):
        return sql.Identifier(self.schema, self.name)


class BatchWriter:
    """Collects a batch's events and writes them in the destination transaction.

    With BACKGROUND, a thread of its own runs the COPY statements (see
    copysend), so the caller must not use CONN between add() and finish(),
    and must call close() before it rolls back CONN after a failure.
    """

    def __init__(self, conn, mode, partitioner, on_new_column="error",
                 on_error="stop", background=False):
        self.conn = conn
        self.sender = CopySender(conn) if background else None
        self.mode = mode
        self.partitioner = partitioner
        self.on_new_column = on_new_column
        self.on_error = on_error
        # Events that on_error = deadletter sets aside: {ev_id: reason}.
        self.dead = {}
        self.targets = {}
        self.buffered = 0
        self.counts = Counts()
        self._stage_count = 0

    def add(self, event, suffix_name):
        """Buffer EVENT for its target table SUFFIX_NAME (in the event's schema)."""
        self.counts.events[event.op] += 1
        target = self.targets.get((event.schema, suffix_name))
        if target is None:
            target = self._target(event, suffix_name)
        if target.reshape:
            self._reshape(event, target)
        buffer = target.buffers.get(event.columns)
        if buffer is None or event.op == "D" or event.pkeys != target.pkeys:
            buffer = self._check_event(event, target)

        buffer.events.append(event)
        self.buffered += 1
        if self.buffered >= FLUSH_EVENTS:
            self.flush()

    def _target(self, event, name):
        key = (event.schema, name)
        target = self.targets.get(key)
        if target is not None:
            return target
        target = _Target(event.schema, event.table, name, event.pkeys, None)
        if self.mode == "keep_latest":
            self._check_keys(event, target)
        self._sync()
        if self.partitioner.ensure(event.schema, event.table, name, event.pkeys,
                                   event.ev_id):
            self.counts.partitions_created += 1
        target.columns = self._table_columns(event.schema, name)
        if self.mode == "keep_latest":
            target.stage = self._create_stage(target)
        self.targets[key] = target
        return target

    def _check_event(self, event, target):
        """Check EVENT against its target. Return the buffer of its column set.

        add() calls this only for a new column set, a delete, or a key list
        that differs from the target's, because the other checks depend on
        the column set alone.
        """
        label = target.parent_label
        if event.op == "D" and self.mode == "keep_all":
            raise EventError(
                "a delete event cannot be applied with mode = keep_all, which "
                "keeps every version; set mode = keep_latest in the job file, or "
                "stop sending deletes to this queue", event.ev_id, label)
        buffer = target.buffers.get(event.columns)
        if buffer is None:
            missing = [name for name in event.columns if name not in target.columns]
            if missing:
                self._new_columns(event, target, missing)
                buffer = target.buffers.get(event.columns)
        if self.mode == "keep_latest":
            if event.pkeys != target.pkeys:
                self._check_keys(event, target)
            absent = [key for key in target.pkeys if key not in event.columns]
            if absent:
                raise EventError(
                    "the event has no value for primary key column %s"
                    % ", ".join(absent), event.ev_id, label)
        if buffer is None:
            buffer = _Buffer(event.columns, len(target.buffers))
            target.buffers[event.columns] = buffer
        return buffer

    def _new_columns(self, event, target, missing):
        """Handle columns that the target lacks, as on_new_column sets."""
        label = target.parent_label
        if self.on_new_column == "ignore":
            kept = [index for index, name in enumerate(event.columns)
                    if name not in missing]
            target.reshape[event.columns] = (
                kept, tuple(event.columns[index] for index in kept))
            warning = (label, tuple(missing))
            if warning not in _WARNED_DROPS:
                # Once per worker process, because every batch drops them again.
                _WARNED_DROPS.add(warning)
                log.warning("dropping values of column %s of %s: the destination "
                            "lacks it (on_new_column = ignore); "
                            "cubemux_values_dropped_total counts them",
                            ", ".join(missing), label)
            self._reshape(event, target)
            return
        if self.on_new_column != "add":
            raise EventError(
                "column %s does not exist in %s.%s: add it to the parent table and "
                "its partitions, or set on_new_column = add or ignore"
                % (", ".join(missing), target.schema, target.name),
                event.ev_id, label)
        self._add_columns(target, missing)

    def _reshape(self, event, target):
        plan = target.reshape.get(event.columns)
        if plan is not None:
            indexes, columns = plan
            self.counts.values_dropped += len(event.columns) - len(indexes)
            event.select(indexes, columns)

    def _add_columns(self, target, missing):
        """Add MISSING as text columns to the parent, the partition and the stage.

        The statements run in the batch's transaction, so a batch that rolls
        back takes the columns back too.
        """
        self._sync()
        tables = [sql.Identifier(target.schema, target.parent)]
        if target.name != target.parent:
            tables.append(target.identifier())
        if target.stage is not None:
            tables.append(target.stage)
        with self.conn.cursor() as cur:
            for column in missing:
                for table in tables:
                    cur.execute(sql.SQL(
                        "alter table {} add column if not exists {} text").format(
                            table, sql.Identifier(column)))
                log.info("added column %s to %s (on_new_column = add)", column,
                         target.parent_label)
                self.counts.columns_added += 1
        target.columns = target.columns | frozenset(missing)

    def truncate(self, event, name):
        """Empty the partition NAME for a truncate event, keeping later events.

        Rows buffered or copied earlier in the batch are dropped with it.
        """
        self._sync()
        target = self.targets.get((event.schema, name))
        if target is not None:
            for buffer in target.buffers.values():
                buffer.take()
            # The truncate removes the rows copied so far, so they were not inserted.
            self._count_copied(target, -target.copied)
            tables = [target.identifier()]
            if target.stage is not None:
                tables.append(target.stage)
        else:
            with self.conn.cursor() as cur:
                cur.execute("select to_regclass(%s) is not null",
                            (sql.Identifier(event.schema, name).as_string(self.conn),))
                if not cur.fetchone()[0]:
                    return
            tables = [sql.Identifier(event.schema, name)]
        with self.conn.cursor() as cur:
            for table in tables:
                cur.execute(sql.SQL("truncate only {}").format(table))

    def _check_keys(self, event, target):
        if not event.pkeys:
            raise EventError(
                "mode = keep_latest needs a primary key, but the event carries "
                "none: add a primary key to the source table (or a pkey= "
                "argument to its logutriga trigger), or set mode = keep_all",
                event.ev_id, target.parent_label)
        if event.pkeys != target.pkeys:
            raise EventError(
                "the event's primary key (%s) differs from the key (%s) of "
                "earlier events of this table in the batch"
                % (", ".join(event.pkeys), ", ".join(target.pkeys)),
                event.ev_id, target.parent_label)

    def _table_columns(self, schema, name):
        with self.conn.cursor() as cur:
            cur.execute(
                "select a.attname from pg_catalog.pg_attribute a"
                " join pg_catalog.pg_class c on c.oid = a.attrelid"
                " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = %s and c.relname = %s"
                " and a.attnum > 0 and not a.attisdropped", (schema, name))
            return frozenset(row[0] for row in cur.fetchall())

    def _create_stage(self, target):
        self._stage_count += 1
        stage = sql.Identifier("cubemux_stage_%d" % self._stage_count)
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL(
                "create temporary table {stage} on commit drop as"
                " select * from only {table} with no data").format(
                    stage=stage, table=target.identifier()))
            cur.execute(sql.SQL(
                "alter table {stage} add column {ev_id} bigint,"
                " add column {op} \"char\", add column {colset} integer").format(
                    stage=stage, ev_id=sql.Identifier(EV_ID_COLUMN),
                    op=sql.Identifier(OP_COLUMN),
                    colset=sql.Identifier(COLSET_COLUMN)))
        return stage

    def flush(self):
        """Send every buffered row with COPY."""
        for target in self.targets.values():
            for buffer in target.buffers.values():
                if buffer.events:
                    self._copy(target, buffer)
        self.buffered = 0

    def _copy(self, target, buffer):
        columns = [sql.Identifier(name) for name in buffer.columns]
        if self.mode == "keep_all":
            into = target.identifier()
        else:
            into = target.stage
            columns += [sql.Identifier(EV_ID_COLUMN), sql.Identifier(OP_COLUMN),
                        sql.Identifier(COLSET_COLUMN)]
        statement = sql.SQL("copy {} ({}) from stdin").format(
            into, sql.SQL(", ").join(columns))
        events = buffer.take()
        colset = None if self.mode == "keep_all" else buffer.colset
        if self.sender is not None:
            self.sender.send(CopyJob(
                statement.as_string(self.conn), encode_rows(events, colset), events,
                target, colset, savepoint=self.on_error == "deadletter"))
        elif self.on_error == "deadletter":
            events = self._copy_setting_aside(statement, events, colset, target)
        else:
            try:
                with self.conn.cursor() as cur:
                    cur.copy_expert(statement.as_string(self.conn),
                                    _CopyInput(events, colset))
            except (psycopg2.DataError, psycopg2.IntegrityError) as error:
                raise self._row_error(error, target, events) from error

        self._count_copied(target, len(events))

    def _count_copied(self, target, count):
        """Count COUNT rows (fewer when negative) copied into TARGET under keep_all."""
        if self.mode == "keep_all":
            target.copied += count
            self.counts.add_rows("inserted", target.parent_label, count)

    def _sync(self):
        """Wait for the COPY thread's statements, so that CONN is free again.

        A row that the destination rejected raises EventError, or under
        on_error = deadletter is set aside, and the rest is copied again.
        """
        if self.sender is None:
            return
        while True:
            job, error, unsent = self.sender.drain()
            if job is None:
                return
            if not isinstance(error, (psycopg2.DataError, psycopg2.IntegrityError)):
                raise error
            if self.on_error != "deadletter":
                raise self._row_error(error, job.target, job.events) from error
            statement = sql.SQL(job.statement)
            copied = self._copy_setting_aside(statement, job.events, job.colset,
                                              job.target, error)
            self._count_copied(job.target, len(copied) - len(job.events))
            for later in unsent:
                self.sender.send(later)

    def close(self):
        """End the COPY thread, abandoning its work. Call it before a rollback."""
        if self.sender is not None:
            self.sender.close(abort=True)

    def _copy_setting_aside(self, statement, events, colset, target, error=None):
        """COPY EVENTS, setting aside each row that the destination rejects.

        ERROR, when given, is that of a COPY of EVENTS that already failed.
        Return the events that were copied.
        """
        if error is not None:
            events = self._set_aside_failed_row(error, events, target)
        while events:
            try:
                with _savepoint(self.conn), self.conn.cursor() as cur:
                    cur.copy_expert(statement.as_string(self.conn),
                                    _CopyInput(events, colset))
                return events
            except (psycopg2.DataError, psycopg2.IntegrityError) as failure:
                events = self._set_aside_failed_row(failure, events, target)
        return events

    def _set_aside_failed_row(self, error, events, target):
        """Set aside the row of EVENTS that made a COPY fail. Return the others.

        When the error names no line of EVENTS, all of them are set aside.
        """
        rejected = str(self._row_error(error, target, events))
        line = copytext.failed_line(error.diag.context)
        if line is None or not 0 < line <= len(events):
            for event in events:
                self.set_aside(event.ev_id, rejected)
            return []
        self.set_aside(events[line - 1].ev_id, rejected)
        return events[:line - 1] + events[line:]

    def set_aside(self, ev_id, reason):
        """Record a bad event for the dead-letter table."""
        self.dead[ev_id] = reason
        self.counts.dead_letters = len(self.dead)

    def _row_error(self, error, target, events):
        diag = error.diag
        line = copytext.failed_line(diag.context)
        ev_id = None
        if line is not None and 0 < line <= len(events):
            ev_id = events[line - 1].ev_id
        message = (diag.message_primary or str(error)).strip()
        return EventError("the destination rejected the row: %s" % message,
                          ev_id, target.parent_label)

    def finish(self):
        """Flush the rest and, under keep_latest, apply the stage tables."""
        self.flush()
        self._sync()
        if self.sender is not None:
            self.sender.close()
        if self.mode == "keep_latest":
            for target in self.targets.values():
                self._apply_latest(target)
        return self.counts

    def _apply_latest(self, target):
        keys = [sql.Identifier(key) for key in target.pkeys]
        key_list = sql.SQL(", ").join(keys)
        table = target.identifier()
        matches = sql.SQL(" and ").join(
            sql.SQL("p.{key} = s.{key}").format(key=key) for key in keys)

        with self.conn.cursor() as cur:
            cur.execute(sql.SQL(
                "delete from {table} p using (select distinct {keys} from {stage}) s"
                " where {matches}").format(
                    table=table, keys=key_list, stage=target.stage, matches=matches))
            self.counts.add_rows("deleted", target.parent_label, cur.rowcount)

            latest = sql.SQL(
                "(select distinct on ({keys}) * from {stage}"
                " order by {keys}, {ev_id} desc) l").format(
                    keys=key_list, stage=target.stage,
                    ev_id=sql.Identifier(EV_ID_COLUMN))
            for buffer in target.buffers.values():
                columns = sql.SQL(", ").join(sql.Identifier(c) for c in buffer.columns)
                insert = sql.SQL(
                    "insert into {table} ({columns}) select {columns} from {latest}"
                    " where {rows}").format(table=table, columns=columns, latest=latest,
                                            rows=_latest_rows(buffer))
                if self.on_error == "deadletter":
                    inserted = self._insert_setting_aside(target, insert, latest,
                                                          columns, buffer)
                else:
                    inserted = self._insert_or_name_row(target, insert, latest,
                                                        columns, buffer)
                self.counts.add_rows("inserted", target.parent_label, inserted)

    def _insert_or_name_row(self, target, insert, latest, columns, buffer):
        """Run INSERT. If the partition rejects a row, raise EventError naming it.

        The stage has none of the partition's NOT NULL and CHECK constraints,
        so such a row gets past COPY and fails only here.
        """
        try:
            with _savepoint(self.conn), self.conn.cursor() as cur:
                cur.execute(insert)
                return cur.rowcount
        except (psycopg2.DataError, psycopg2.IntegrityError) as error:
            log.info("the partition %s.%s rejected a row: searching for it",
                     target.schema, target.name)
            first = error
        ev_id, error = self._first_rejected(target, latest, columns, buffer, first)
        message = (error.diag.message_primary or str(error)).strip()
        raise EventError("the destination rejected the row: %s" % message,
                         ev_id, target.parent_label) from error

    def _first_rejected(self, target, latest, columns, buffer, error):
        """Return (ev_id, error) of the first latest row that the partition rejects.

        ERROR is that of inserting them all. A binary search inserts ever
        shorter runs of the rows in ev_id order, each rolled back, so it takes
        about log2(rows) statements.
        """
        ev_ids = self._latest_ev_ids(latest, buffer)
        # Inserting the first LOW rows works, and the first HIGH rows fail.
        low, high = 0, len(ev_ids)
        while high - low > 1:
            middle = (low + high) // 2
            failure = self._try_insert(target, latest, columns, buffer,
                                       ev_ids[middle - 1])
            if failure is None:
                low = middle
            else:
                high, error = middle, failure
        return (ev_ids[high - 1] if ev_ids else None), error

    def _try_insert(self, target, latest, columns, buffer, last_ev_id):
        """Insert the latest rows up to LAST_EV_ID, then roll them back.

        Return the error that the partition raised, or None.
        """
        statement = sql.SQL(
            "insert into {table} ({columns}) select {columns} from {latest}"
            " where {rows}").format(table=target.identifier(), columns=columns,
                                    latest=latest, rows=_latest_rows(buffer, last_ev_id))
        failure = None
        with self.conn.cursor() as cur:
            cur.execute("savepoint cubemux_probe")
            try:
                cur.execute(statement)
            except (psycopg2.DataError, psycopg2.IntegrityError) as error:
                failure = error
            cur.execute("rollback to savepoint cubemux_probe")
            cur.execute("release savepoint cubemux_probe")
        return failure

    def _latest_ev_ids(self, latest, buffer):
        """Return the ev_ids of BUFFER's latest rows to insert, in order."""
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL(
                "select l.{ev_id} from {latest} where {rows} order by 1").format(
                    ev_id=sql.Identifier(EV_ID_COLUMN), latest=latest,
                    rows=_latest_rows(buffer)))
            return [row[0] for row in cur.fetchall()]

    def _insert_setting_aside(self, target, insert, latest, columns, buffer):
        """Run INSERT. If the partition rejects a row, insert row by row instead."""
        try:
            with _savepoint(self.conn), self.conn.cursor() as cur:
                cur.execute(insert)
                return cur.rowcount
        except (psycopg2.DataError, psycopg2.IntegrityError):
            log.info("the partition %s.%s rejected a row: inserting one row at a "
                     "time to set the bad ones aside", target.schema, target.name)
        return self._insert_one_by_one(target, latest, columns, buffer)

    def _insert_one_by_one(self, target, latest, columns, buffer):
        """Insert the latest rows of BUFFER's column set one at a time, in ev_id order.

        Set aside each row that the partition rejects. Return the rows inserted.
        """
        ev_id = sql.Identifier(EV_ID_COLUMN)
        inserted = 0
        for row_ev_id in self._latest_ev_ids(latest, buffer):
            single = sql.SQL(
                "insert into {table} ({columns}) select {columns} from {stage}"
                " where {ev_id} = {number}").format(
                    table=target.identifier(), columns=columns, stage=target.stage,
                    ev_id=ev_id, number=sql.Literal(row_ev_id))
            try:
                with _savepoint(self.conn), self.conn.cursor() as cur:
                    cur.execute(single)
                inserted += 1
            except (psycopg2.DataError, psycopg2.IntegrityError) as error:
                message = (error.diag.message_primary or str(error)).strip()
                self.set_aside(row_ev_id, "event %d, table %s: the destination "
                               "rejected the row: %s"
                               % (row_ev_id, target.parent_label, message))
        return inserted


def _latest_rows(buffer, last_ev_id=None):
    """Return the condition on the latest versions ``l`` that BUFFER inserts.

    Those are the versions of BUFFER's column set that are not deletes, up
    to LAST_EV_ID when given. Values go in as sql.Literal, not as parameters,
    because psycopg2 would read a % in a column name as a placeholder.
    """
    condition = sql.SQL("l.{op} <> 'D' and l.{colset} = {number}").format(
        op=sql.Identifier(OP_COLUMN), colset=sql.Identifier(COLSET_COLUMN),
        number=sql.Literal(buffer.colset))
    if last_ev_id is None:
        return condition
    return sql.SQL("{} and l.{} <= {}").format(
        condition, sql.Identifier(EV_ID_COLUMN), sql.Literal(last_ev_id))


class _savepoint:
    """A savepoint around a block: released on success, rolled back on error."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        with self.conn.cursor() as cur:
            cur.execute("savepoint cubemux_rows")
        return self

    def __exit__(self, kind, error, trace):
        with self.conn.cursor() as cur:
            if kind is not None:
                cur.execute("rollback to savepoint cubemux_rows")
            cur.execute("release savepoint cubemux_rows")
        return False
