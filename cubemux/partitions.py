"""Partition naming and creation from the job's part_template."""

import logging
import re

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from cubemux import timing
from cubemux.errors import EventError, PartitionError

log = logging.getLogger(__name__)

# PostgreSQL's NAMEDATALEN is 64, so a name has at most 63 bytes.
MAX_NAME_BYTES = 63

# _SCHEMA_TABLE takes the letters around it into its identifier, because
# templates name indexes such as _SCHEMA_TABLE_idx or pk_SCHEMA_TABLE.
_PLACEHOLDER = re.compile(
    r"_DEST_TABLE|\w*?_SCHEMA_TABLE\w*|_PARENT|_PKEY|_PART_START|_PART_END")
_BOUND_PLACEHOLDER = re.compile(r"_PART_START|_PART_END")

# Waiting longer than this for a lock while creating a partition is an error
# instead of a hang.
DDL_LOCK_TIMEOUT = "30s"


def partition_name(table, suffix):
    """Return the name of TABLE's partition for SUFFIX. None means the table itself.

    Raise PartitionError when the name is longer than PostgreSQL allows,
    because PostgreSQL would silently truncate it.
    """
    if suffix is None:
        return table
    name = "%s_%s" % (table, suffix)
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise PartitionError(
            "partition name %r is %d bytes long, more than PostgreSQL's limit "
            "of %d: use a shorter dateformat or rename the table"
            % (name, size, MAX_NAME_BYTES))
    return name


def render_template(template, schema, parent, partition, pkeys, period=None):
    """Return the template as composed SQL with every placeholder quoted.

    _DEST_TABLE and _PARENT become schema-qualified identifiers, _PKEY the
    comma-separated key columns and _SCHEMA_TABLE the partition's schema and
    name joined with an underscore, as one identifier with the letters
    around the placeholder, so _SCHEMA_TABLE_idx names an index. _PART_START and
    _PART_END become string literals of the period's bounds, which PostgreSQL
    reads as a timestamptz, a timestamp or a date. PERIOD is (start, end).
    """
    values = {
        "_DEST_TABLE": sql.Identifier(schema, partition),
        "_PARENT": sql.Identifier(schema, parent),
        "_PKEY": sql.SQL(", ").join(sql.Identifier(key) for key in pkeys),
    }
    if period is not None:
        values["_PART_START"] = sql.Literal(timing.literal_time(period[0]))
        values["_PART_END"] = sql.Literal(timing.literal_time(period[1]))
    parts = []
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        if "_SCHEMA_TABLE" in match.group(0):
            before, _, after = match.group(0).partition("_SCHEMA_TABLE")
            parts.append(sql.SQL(template[position:match.start()]))
            parts.append(sql.Identifier("%s%s_%s%s" % (before, schema, partition, after)))
            position = match.end()
            continue
        if match.group(0) not in values:
            raise PartitionError(
                "%s in the partition template needs a period: set period, or a "
                "dateformat made of YYYY, MM, DD, HH24, MI or SS fields"
                % match.group(0))
        parts.append(sql.SQL(template[position:match.start()]))
        parts.append(values[match.group(0)])
        position = match.end()
    parts.append(sql.SQL(template[position:]))
    return sql.Composed(parts)


def uses_bounds(template):
    """Return True when TEMPLATE names _PART_START or _PART_END."""
    return bool(_BOUND_PLACEHOLDER.search(template or ""))


def table_exists(cur, schema, name):
    cur.execute(
        "select 1 from pg_catalog.pg_class c"
        " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s", (schema, name))
    return cur.fetchone() is not None


class Partitioner:
    """Creates missing partitions through a connection of its own.

    Each partition is created in a short transaction of its own, under an
    advisory lock on its name. Two jobs that need the same new partition
    then wait for each other instead of failing, and the parent is not kept
    locked while a batch loads. An empty partition is all that survives a
    batch that rolls back afterwards. When the batch's own transaction (MAIN)
    already locks the parent, the partition is created in that transaction.
    """

    def __init__(self, connection, template, job_name, pre_part="", post_part="",
                 main=None):
        self.connection = connection
        self.main = main
        self.template = template
        self.pre_part = pre_part or ""
        self.post_part = post_part or ""
        self.job_name = job_name
        self.known = set()
        self.created = 0
        self.periods = {}

    def note_period(self, schema, partition, period):
        """Remember the (start, end) bounds of a partition for its placeholders."""
        if period is not None:
            self.periods[(schema, partition)] = period

    def ensure(self, schema, parent, partition, pkeys, ev_id):
        """Create SCHEMA.PARTITION from the template unless it exists.

        Return True when this call created it.
        """
        key = (schema, partition)
        if key in self.known:
            return False
        main = self.main.conn if self.main is not None else None
        if main is not None and partition != parent and _holds_lock_on(
                main, schema, parent):
            # The batch's transaction already locks the parent, as writing into
            # a native partition does, and creating a native partition waits
            # for that lock, so a second transaction would wait for this one.
            created = self._create_in_batch(main, schema, parent, partition, pkeys,
                                            ev_id)
        else:
            created = self._create_alone(schema, parent, partition, pkeys, ev_id)
        self.known.add(key)
        if created:
            self.created += 1
            log.info("created partition %s.%s", schema, partition)
        return created

    def _create_alone(self, schema, parent, partition, pkeys, ev_id):
        conn = self.connection.get()
        try:
            created = self._create(conn, schema, parent, partition, pkeys, ev_id)
        except psycopg2.errors.DuplicateTable:
            # Created by someone who does not take the advisory lock.
            conn.rollback()
            return False
        except (EventError, PartitionError):
            conn.rollback()
            raise
        except psycopg2.Error as error:
            conn.rollback()
            raise _template_failed(schema, parent, partition, error) from error
        conn.commit()
        return created

    def _create_in_batch(self, conn, schema, parent, partition, pkeys, ev_id):
        with conn.cursor() as cur:
            cur.execute("savepoint cubemux_partition")
        try:
            created = self._create(conn, schema, parent, partition, pkeys, ev_id)
        except psycopg2.errors.DuplicateTable:
            created = False
            _rollback_to(conn, "cubemux_partition")
        except psycopg2.Error as error:
            _rollback_to(conn, "cubemux_partition")
            raise _template_failed(schema, parent, partition, error) from error
        except BaseException:
            _rollback_to(conn, "cubemux_partition")
            raise
        with conn.cursor() as cur:
            cur.execute("release savepoint cubemux_partition")
        return created

    def _create(self, conn, schema, parent, partition, pkeys, ev_id):
        """Run the templates unless the partition exists. Commit nothing."""
        with conn.cursor() as cur:
            cur.execute("set local lock_timeout = %s", (DDL_LOCK_TIMEOUT,))
            cur.execute("select pg_advisory_xact_lock(hashtext(%s))",
                        ("cubemux.partition:%s.%s" % (schema, partition),))
            if table_exists(cur, schema, partition):
                return False
            if not table_exists(cur, schema, parent):
                raise EventError(
                    "parent table %s.%s does not exist in the destination "
                    "database: create it before dispatching its events"
                    % (schema, parent), ev_id, "%s.%s" % (schema, parent))
            period = self.periods.get((schema, partition))
            for template in (self.pre_part, self.template, self.post_part):
                if template.strip():
                    cur.execute(render_template(template, schema, parent, partition,
                                                pkeys, period))
        return True


def _rollback_to(conn, savepoint):
    """Undo the work since SAVEPOINT, keeping the batch's transaction usable."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("rollback to savepoint {}").format(sql.Identifier(savepoint)))
        cur.execute(sql.SQL("release savepoint {}").format(sql.Identifier(savepoint)))


def _template_failed(schema, parent, partition, error):
    return PartitionError(
        "creating partition %s.%s of %s.%s from part_template failed: %s"
        % (schema, partition, schema, parent, (error.pgerror or str(error)).strip()))


def _holds_lock_on(conn, schema, table):
    """Return True when CONN's open transaction holds a lock on SCHEMA.TABLE."""
    with conn.cursor() as cur:
        cur.execute(
            "select exists (select 1 from pg_catalog.pg_locks l"
            " join pg_catalog.pg_class c on c.oid = l.relation"
            " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
            " where l.pid = pg_backend_pid() and n.nspname = %s and c.relname = %s)",
            (schema, table))
        return cur.fetchone()[0]
