"""The benchmark's tables and its reproducible stream of logutriga events.

Two tables take part: ``narrow`` (3 columns) and ``wide`` (15 columns of
mixed types: numbers, booleans, text with tabs, newlines, backslashes and
non-ASCII letters, NULLs and empty strings, timestamps, arrays, JSON and
UUIDs). Every value is a function of the row's id, so the same event count
gives the same events in every run.

The events come from real pgq.logutriga() triggers. Half of them are on each
table, in chunks of 1,000 events that alternate between the tables, and all
of them are in one source transaction, so they form one batch.
"""

from psycopg2 import sql

NARROW_DDL = """
create table public.narrow (
    id bigint primary key,
    quantity integer,
    name text
)
"""

WIDE_DDL = """
create table public.wide (
    id bigint primary key,
    account_id integer not null,
    amount numeric(12, 2),
    price double precision,
    quantity smallint,
    is_active boolean,
    currency char(3),
    name text,
    note text,
    created_at timestamptz,
    valid_on date,
    tags text[],
    attributes jsonb,
    ref uuid,
    ratio real
)
"""

TABLES = ("narrow", "wide")

# Events per chunk and table. In each chunk of keep_latest events 600 rows are
# inserted, the 300 even ids updated and the 100 ids divisible by 6 (inserted,
# updated, then deleted) removed. A keep_all chunk has 700 inserts and 300
# updates and no deletes, because keep_all rejects deletes.
CHUNK_EVENTS = 1000
MIXES = {
    "keep_latest": {"inserts": 600, "updates": 300, "deletes": 100},
    "keep_all": {"inserts": 700, "updates": 300, "deletes": 0},
}

_INSERT_NARROW = """
insert into public.narrow (id, quantity, name)
select i, (i %% 1000)::int, 'item-' || i
  from generate_series(%(first)s::bigint, %(last)s::bigint) i
"""

_INSERT_WIDE = r"""
insert into public.wide
select i,
       (i %% 1000)::int,
       ((i * 7919) %% 1000000) / 100.0,
       i * 0.125,
       (i %% 100)::smallint,
       i %% 3 <> 0,
       (array['EUR', 'USD', 'SEK'])[1 + i %% 3],
       'customer ' || i,
       case i %% 20
           when 0 then E'line one\nline\ttwo \\ back ''quoted'''
           when 1 then null
           when 2 then ''
           when 3 then 'Õunapuu äär ' || i || ' 🍎'
           else 'note ' || md5(i::text)
       end,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second',
       date '2024-01-01' + (i %% 365)::int,
       array['t' || (i %% 5), 't' || (i %% 7)],
       jsonb_build_object('k', i %% 10, 's', 'v' || i),
       md5(i::text)::uuid,
       ((i %% 1000) / 1000.0)::real
  from generate_series(%(first)s::bigint, %(last)s::bigint) i
"""

_NARROW_UPDATE = "update public.narrow set quantity = quantity + 1"
_WIDE_UPDATE = ("update public.wide set amount = amount + 1,"
                " note = 'updated ' || id, is_active = not is_active")
_IN_CHUNK = " where id between %(first)s and %(last)s"

# Each chunk updates 300 ids: the even ones of 600, or those 0, 1 or 2 mod 7 of 700.
_UPDATES = {
    ("narrow", "keep_latest"): _NARROW_UPDATE + _IN_CHUNK + " and id %% 2 = 0",
    ("wide", "keep_latest"): _WIDE_UPDATE + _IN_CHUNK + " and id %% 2 = 0",
    ("narrow", "keep_all"): _NARROW_UPDATE + _IN_CHUNK + " and id %% 7 < 3",
    ("wide", "keep_all"): _WIDE_UPDATE + _IN_CHUNK + " and id %% 7 < 3",
}

# Each keep_latest chunk deletes the 100 ids divisible by 6.
_DELETES = {
    "narrow": "delete from public.narrow" + _IN_CHUNK + " and id %% 6 = 0",
    "wide": "delete from public.wide" + _IN_CHUNK + " and id %% 6 = 0",
}

_INSERTS = {"narrow": _INSERT_NARROW, "wide": _INSERT_WIDE}


def source_tables(cur):
    """Create the benchmark's tables on the source."""
    cur.execute(NARROW_DDL)
    cur.execute(WIDE_DDL)


def destination_tables(cur):
    """Create the parent tables that the partitions copy."""
    cur.execute(NARROW_DDL)
    cur.execute(WIDE_DDL)


def attach_triggers(cur, queue):
    """Route every row change of both tables to QUEUE, replacing older triggers."""
    for table in TABLES:
        identifier = sql.Identifier("public", table)
        cur.execute(sql.SQL("drop trigger if exists bench_queue on {}").format(
            identifier))
        cur.execute(sql.SQL(
            "create trigger bench_queue after insert or update or delete on {}"
            " for each row execute procedure pgq.logutriga({})").format(
                identifier, sql.Literal(queue)))


def generate(cur, mode, events):
    """Write EVENTS events for MODE through the triggers, in the current transaction.

    The tables are emptied first. TRUNCATE writes no event, because the
    triggers are row triggers.
    Return {"I": n, "U": n, "D": n}, the events written.
    """
    mix = MIXES[mode]
    cur.execute("truncate public.narrow, public.wide")

    chunks = events // (CHUNK_EVENTS * len(TABLES))
    if chunks < 1:
        raise ValueError("the workload needs at least %d events"
                         % (CHUNK_EVENTS * len(TABLES)))
    written = {"I": 0, "U": 0, "D": 0}
    for chunk in range(chunks):
        first = chunk * mix["inserts"] + 1
        bounds = {"first": first, "last": first + mix["inserts"] - 1}
        for table in TABLES:
            written["I"] += _run(cur, _INSERTS[table], bounds)
            written["U"] += _run(cur, _UPDATES[table, mode], bounds)
            if mix["deletes"]:
                written["D"] += _run(cur, _DELETES[table], bounds)
    return written


def _run(cur, statement, params):
    cur.execute(statement, params)
    return cur.rowcount
