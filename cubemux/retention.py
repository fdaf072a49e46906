"""Retention: drop or detach partitions that fall wholly before the kept window.

Only tables whose name is a parent's name, an underscore and a suffix that
the job's dateformat produces are considered, so tables that other tools
made are never touched.
"""

import datetime
import logging

from psycopg2 import sql

from cubemux import timing

log = logging.getLogger(__name__)

# How often a worker looks for expired partitions, in seconds.
CHECK_INTERVAL = 600.0

_UNIT_DAYS = {"hour": None, "day": 1, "week": 7}


def cutoff(now, period, zone):
    """Return the local naive time before which whole partitions expire.

    PERIOD has a count and a unit: hour, day, week, month or year.
    """
    count, unit = period.count, period.unit
    local = now.astimezone(zone).replace(tzinfo=None)
    unit = unit.rstrip("s")
    if unit == "hour":
        return local - datetime.timedelta(hours=count)
    if unit in ("day", "week"):
        return local - datetime.timedelta(days=count * _UNIT_DAYS[unit])
    months = count * (12 if unit == "year" else 1)
    index = local.year * 12 + local.month - 1 - months
    day = min(local.day, 28)
    return local.replace(year=index // 12, month=index % 12 + 1, day=day)


def expired(names, parent, suffix_format, unit, limit):
    """Return the NAMES of PARENT's partitions whose period ends by LIMIT."""
    prefix = parent + "_"
    found = []
    for name in names:
        if not name.startswith(prefix):
            continue
        start = suffix_format.parse(name[len(prefix):])
        if start is not None and timing.advance(start, unit) <= limit:
            found.append(name)
    return sorted(found)


def _children(cur, schema, parent):
    cur.execute(
        "select c.relname from pg_catalog.pg_class c"
        " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relkind in ('r', 'p')"
        " and left(c.relname, %s) = %s",
        (schema, len(parent) + 1, parent + "_"))
    return [row[0] for row in cur.fetchall()]


def _attachment(cur, schema, parent, name):
    """Return 'partition', 'inherits' or None: how NAME hangs under PARENT."""
    cur.execute(
        "select c.relispartition from pg_catalog.pg_inherits i"
        " join pg_catalog.pg_class c on c.oid = i.inhrelid"
        " join pg_catalog.pg_class p on p.oid = i.inhparent"
        " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s and p.relname = %s"
        " and p.relnamespace = c.relnamespace", (schema, name, parent))
    row = cur.fetchone()
    if row is None:
        return None
    return "partition" if row[0] else "inherits"


def enforce(conn, schema, parent, suffix_format, unit, limit, action, job_name):
    """Drop or detach PARENT's expired partitions. Return how many were handled.

    Each table is handled in a transaction of its own on CONN.
    """
    with conn.cursor() as cur:
        names = expired(_children(cur, schema, parent), parent, suffix_format, unit,
                        limit)
    conn.commit()
    handled = 0
    for name in names:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_xact_lock(hashtext(%s))",
                        ("cubemux.partition:%s.%s" % (schema, name),))
            table = sql.Identifier(schema, name)
            if action == "drop":
                cur.execute(sql.SQL("drop table if exists {}").format(table))
                verb = "dropped"
            else:
                attachment = _attachment(cur, schema, parent, name)
                if attachment is None:
                    conn.rollback()
                    continue
                if attachment == "partition":
                    statement = "alter table {} detach partition {}"
                    cur.execute(sql.SQL(statement).format(
                        sql.Identifier(schema, parent), table))
                else:
                    cur.execute(sql.SQL("alter table {} no inherit {}").format(
                        table, sql.Identifier(schema, parent)))
                verb = "detached"
        conn.commit()
        handled += 1
        log.info("%s expired partition %s.%s", verb, schema, name)
    return handled
