"""A changing source table, a ticker and checks of the destination, for fault tests."""

import random
import threading
import time

import psycopg2

from conftest import connect

SOURCE_DDL = """
create table public.acct (id int primary key, version int not null, note text);
create table public.acct_log (id int, version int, note text);
create function public.log_acct() returns trigger language plpgsql as $$
begin
    insert into public.acct_log values (new.id, new.version, new.note);
    return new;
end $$;
create trigger acct_log after insert or update on public.acct
    for each row execute procedure public.log_acct();
"""

DEST_DDL = "create table public.acct (id int primary key, version int not null, note text)"


def create_tables(setup):
    setup.src_exec(SOURCE_DDL)
    setup.src_exec("create trigger acct_q after insert or update or delete on public.acct"
                   " for each row execute procedure pgq.logutriga(%s)", (setup.queue,))
    setup.dst_exec(DEST_DDL)


class Workload(threading.Thread):
    """Writes random inserts, updates and deletes until COUNT events are made.

    Survives source outages: it reconnects and carries on. Without DELETES,
    the share of deletes becomes inserts.
    """

    def __init__(self, dsn, count, keys=2000, per_transaction=50, seed=1, deletes=True,
                 pause=0.0):
        super().__init__(daemon=True)
        self.pause = pause
        self.deletes = deletes
        self.dsn = dsn
        self.count = count
        self.keys = keys
        self.per_transaction = per_transaction
        self.random = random.Random(seed)
        self.made = 0
        self.error = None

    def run(self):
        conn = None
        while self.made < self.count:
            try:
                if conn is None:
                    conn = psycopg2.connect(self.dsn)
                self._transaction(conn)
                time.sleep(self.pause)
            except psycopg2.OperationalError:
                conn = None
                time.sleep(0.2)
            except Exception as error:  # Reported through self.error.
                self.error = error
                return

    def _transaction(self, conn):
        made = 0
        with conn.cursor() as cur:
            for _ in range(self.per_transaction):
                key = self.random.randrange(self.keys)
                choice = self.random.random()
                if choice < 0.15 and self.deletes:
                    cur.execute("delete from acct where id = %s", (key,))
                elif choice < 0.6 and choice >= 0.15:
                    cur.execute("update acct set version = version + 1,"
                                " note = md5(random()::text) where id = %s", (key,))
                else:
                    cur.execute("insert into acct values (%s, 1, 'new') on conflict"
                                " do nothing", (key,))
                made += cur.rowcount
        conn.commit()
        self.made += made


class Ticker(threading.Thread):
    """Calls pgq.ticker() every INTERVAL seconds, as pgqd would, until stopped."""

    def __init__(self, dsn, interval=0.2):
        super().__init__(daemon=True)
        self.dsn = dsn
        self.interval = interval
        self.stopped = threading.Event()

    def run(self):
        conn = None
        while not self.stopped.wait(self.interval):
            try:
                if conn is None:
                    conn = connect(self.dsn)
                with conn.cursor() as cur:
                    cur.execute("select pgq.ticker()")
            except psycopg2.OperationalError:
                conn = None

    def stop(self):
        self.stopped.set()
        self.join(10)


def wait_caught_up(setup, consumers, timeout=120):
    """Wait until each consumer has finished the queue's newest tick."""
    tick = setup.tick()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = setup.src_query(
            "select count(*) from pgq.get_consumer_info(%s) where consumer_name = any(%s)"
            " and last_tick >= %s", (setup.queue, list(consumers), tick))[0][0]
        if done == len(consumers):
            return tick
        time.sleep(0.1)
    raise AssertionError("consumers %s did not reach tick %d" % (consumers, tick))


def partitions(conn_query, parent="acct"):
    rows = conn_query("select tablename from pg_tables where schemaname = 'public'"
                      " and tablename like %s order by 1", (parent + "\\_%",))
    return [row[0] for row in rows]


def latest_matches_source(setup, dst_query=None):
    """Return (expected, actual) rows for a keep_latest destination with one partition."""
    dst_query = dst_query or setup.dst_query
    names = partitions(dst_query)
    assert len(names) == 1, names
    actual = dst_query('select id, version, note from public."%s" order by id' % names[0])
    expected = setup.src_query("select id, version, note from acct order by id")
    return expected, actual


def all_versions(setup, dst_query):
    names = partitions(dst_query)
    assert len(names) == 1, names
    actual = dst_query('select id, version, note from public."%s" order by 1, 2'
                       % names[0])
    expected = setup.src_query("select id, version, note from acct_log order by 1, 2")
    return expected, actual
