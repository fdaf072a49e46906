"""Run the sample jobs of jobs.d on a pgbench workload and check what they wrote.

The demo starts a private PostgreSQL cluster with pgq in DEMO_DIR, the socket
folder that the job files name. It loads the pgbench tables into the source
database, copies their definitions to the destination database and puts
logutriga triggers on them. Then it starts pgqd and ``cubemux start jobs.d``,
runs a timed pgbench, waits until the jobs have applied every event, stops
what it started by pid and prints the partitions that the jobs filled, each
checked against the source tables.

Run it through demo/run, which installs what it needs first. It must run as
root, or as the user that owns DEMO_DIR. A second run waits for the first.
"""

import argparse
import collections
import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from cubemux import config
from cubemux.devcluster import PG_BIN, Cluster
from cubemux.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS_DIR = os.path.join(REPO, "jobs.d")

# The connection strings in jobs.d name this socket folder, port, user and
# these databases.
DEMO_DIR = "/tmp/cubemux-demo"
PORT = 5432
DB_USER = "postgres"
SRC_DB = "demo_src"
DST_DB = "demo_dst"
LOCK_PATH = DEMO_DIR + ".lock"

# The source tables whose triggers feed each queue, with the primary key of
# each keep_latest table. pgbench_history records the account, teller and
# branch of every transaction in columns of the same names, so its rows
# identify the rows of the other tables that the workload changed.
QUEUE_TABLES = {
    "balances": {"pgbench_accounts": "aid", "pgbench_tellers": "tid",
                 "pgbench_branches": "bid"},
    "history": {"pgbench_history": None},
}
HISTORY_TABLE = "pgbench_history"

# Destination tables that are natively partitioned, by range of this column.
NATIVE_PARTITIONING = {"pgbench_history": "mtime"}

# Waits, in seconds. STOP_TIMEOUT is longer than the 30 s that the master
# gives a stopping worker to finish its batch.
LOCK_TIMEOUT = 600
REGISTER_TIMEOUT = 60
TICK_TIMEOUT = 30
DRAIN_TIMEOUT = 300
STOP_TIMEOUT = 60
STATUS_INTERVAL = 5

_PR_SET_PDEATHSIG = 1


class DemoError(Exception):
    """A failed step of the demo. The message names the step and the log to read."""


def say(message):
    print("demo: %s" % message, flush=True)


def log_path(name):
    return os.path.join(DEMO_DIR, name)


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as handle:
            return handle.readlines()[-lines:]
    except OSError:
        return []


# Processes.


def _die_with_demo():
    """Ask Linux to send SIGTERM to this child when the demo dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Processes:
    """The long-running processes that the demo started, by name.

    Each runs in a process group of its own, so a Ctrl-C in the terminal
    reaches only the demo, which then stops them in reverse start order.
    """

    def __init__(self):
        self.running = {}

    def start(self, name, argv, output):
        with open(output, "ab") as handle:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=handle,
                stderr=subprocess.STDOUT, process_group=0,
                preexec_fn=_die_with_demo)
        self.running[name] = process
        say("started %s (pid %d), output in %s" % (name, process.pid, output))
        return process

    def stop(self, name, timeout=STOP_TIMEOUT):
        """Send SIGTERM to NAME and wait for it. Return its exit code.

        A process still running TIMEOUT seconds later gets SIGKILL.
        """
        process = self.running.pop(name)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                say("%s (pid %d) still runs %d s after SIGTERM: sending SIGKILL"
                    % (name, process.pid, timeout))
                process.kill()
                process.wait()
        return process.returncode

    def stop_all(self):
        for name in reversed(list(self.running)):
            process = self.running[name]
            code = self.stop(name)
            say("stopped %s (pid %d), exit code %s" % (name, process.pid, code))


def take_lock():
    """Lock LOCK_PATH, waiting up to LOCK_TIMEOUT seconds for another run."""
    handle = open(LOCK_PATH, "a")
    deadline = time.monotonic() + LOCK_TIMEOUT
    waiting = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            pass
        if not waiting:
            say("waiting for another demo run to release %s" % LOCK_PATH)
            waiting = True
        if time.monotonic() > deadline:
            handle.close()
            raise DemoError("waiting for %s timed out after %d s: another demo "
                            "run still holds it" % (LOCK_PATH, LOCK_TIMEOUT))
        time.sleep(1)


# Databases.


def connect(dbname):
    dsn = "host=%s port=%d user=%s dbname=%s" % (DEMO_DIR, PORT, DB_USER, dbname)
    conn = psycopg2.connect(dsn, application_name="cubemux-demo")
    conn.autocommit = True
    return conn


def query(conn, statement, params=None):
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def execute(conn, statement, params=None):
    with conn.cursor() as cur:
        cur.execute(statement, params)


def client_args(dbname):
    return ["-h", DEMO_DIR, "-p", str(PORT), "-U", DB_USER, "-d", dbname]


def run_client(program, *args, stdin=None):
    """Run a PostgreSQL client program and return its output."""
    command = [os.path.join(PG_BIN, program), *args]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True)
    if result.returncode != 0:
        raise DemoError("%s failed with exit code %d: %s"
                        % (program, result.returncode, result.stderr.strip()))
    return result.stdout


def start_cluster():
    """Start a new cluster in DEMO_DIR, after removing the one of an earlier run."""
    cluster = Cluster(DEMO_DIR, port=PORT)
    cluster.destroy()
    cluster.init()
    cluster.start()
    say("started PostgreSQL in %s (unix socket only, port %d)" % (DEMO_DIR, PORT))
    if cluster.user != DB_USER:
        # The server runs as the demo's user, whose name is its superuser.
        cluster.psql("postgres", "create role %s superuser login" % DB_USER)
    cluster.createdb(SRC_DB)
    cluster.createdb(DST_DB)
    return cluster


def load_pgbench(scale):
    run_client("pgbench", "-i", "-q", "-s", str(scale), *client_args(SRC_DB))
    say("loaded the pgbench tables at scale %d into %s" % (scale, SRC_DB))


def copy_table_definitions():
    """Create the parent tables in the destination as the source defines them."""
    tables = [table for tables in QUEUE_TABLES.values() for table in tables]
    table_args = [arg for table in tables for arg in ("-t", table)]
    ddl = run_client("pg_dump", "--schema-only", "--no-owner", "--no-privileges",
                     *table_args, *client_args(SRC_DB))
    # pg_dump's output contains psql meta-commands, so psql applies it.
    run_client("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *client_args(DST_DB),
               stdin=ddl)
    dst = connect(DST_DB)
    try:
        for table, column in NATIVE_PARTITIONING.items():
            plain = sql.Identifier(table + "_plain")
            execute(dst, sql.SQL("alter table {} rename to {}").format(
                sql.Identifier(table), plain))
            execute(dst, sql.SQL(
                "create table {} (like {} including all) partition by range ({})"
                ).format(sql.Identifier(table), plain, sql.Identifier(column)))
            execute(dst, sql.SQL("drop table {}").format(plain))
    finally:
        dst.close()
    say("created the parent tables %s in %s, %s partitioned by range of %s"
        % (", ".join(tables), DST_DB, ", ".join(NATIVE_PARTITIONING),
           ", ".join(NATIVE_PARTITIONING.values())))


def add_queues_and_triggers(src):
    execute(src, "create extension pgq")
    for queue, tables in QUEUE_TABLES.items():
        execute(src, "select pgq.create_queue(%s)", (queue,))
        for table in tables:
            execute(src, sql.SQL(
                "create trigger cube_dispatch after insert or update or delete"
                " on {} for each row execute function pgq.logutriga({})").format(
                    sql.Identifier(table), sql.Literal(queue)))
        say("created queue %s, fed by logutriga triggers on %s"
            % (queue, ", ".join(tables)))


# Jobs.


def load_jobs():
    """Return {queue name: JobConfig} of jobs.d, checked against the demo's setup."""
    jobs = {}
    for path in config.job_files(JOBS_DIR):
        job = config.load_job(path)
        _check_dsn(job.path, "src_db", job.src_db, SRC_DB)
        _check_dsn(job.path, "dst_db", job.dst_db, DST_DB)
        jobs[job.pgq_queue_name] = job
    missing = [queue for queue in QUEUE_TABLES if queue not in jobs]
    if missing:
        raise DemoError("%s has no job for queue %s, which the demo fills"
                        % (JOBS_DIR, ", ".join(missing)))
    return {queue: jobs[queue] for queue in QUEUE_TABLES}


def _check_dsn(path, key, dsn, dbname):
    params = psycopg2.extensions.parse_dsn(dsn)
    expected = {"host": DEMO_DIR, "dbname": dbname, "user": DB_USER}
    for name, value in expected.items():
        if params.get(name) != value:
            raise DemoError("%s: %s = %s does not point at the demo: expected "
                            "%s=%s" % (path, key, dsn, name, value))


def run_cubemux(*args):
    """Run a cubemux command, its output going to the terminal."""
    result = subprocess.run([sys.executable, "-m", "cubemux", *args])
    if result.returncode != 0:
        raise DemoError("cubemux %s failed with exit code %d"
                        % (" ".join(args), result.returncode))


# Queue figures.


def consumer_position(src, job):
    """Return (last tick, events waiting, lag in seconds) or None if not registered."""
    rows = query(
        src,
        "select c.last_tick, coalesce(c.pending_events, 0) + coalesce(q.ev_new, 0),"
        " extract(epoch from c.lag)"
        " from pgq.get_consumer_info(%s, %s) c, pgq.get_queue_info(%s) q",
        (job.pgq_queue_name, job.pgq_consumer_id, job.pgq_queue_name))
    return rows[0] if rows else None


def queue_tick(src, queue):
    """Return (last tick id, events not yet in a tick) of QUEUE."""
    return query(src, "select last_tick_id, ev_new from pgq.get_queue_info(%s)",
                 (queue,))[0]


def print_status(src, jobs, elapsed):
    parts = []
    for job in jobs.values():
        position = consumer_position(src, job)
        if position is None:
            parts.append("%s: not registered" % job.job_name)
            continue
        _, waiting, lag = position
        parts.append("%s: %d events waiting, lag %.1f s"
                     % (job.job_name, waiting, lag or 0.0))
    say("%3.0f s  %s" % (elapsed, "; ".join(parts)))


def check_running(process, name, output):
    code = process.poll()
    if code is not None:
        raise DemoError("%s exited with code %d; see %s" % (name, code, output))


# Steps with the jobs running.


def wait_for_consumers(src, jobs, master):
    """Wait until every job has registered its consumer on its queue."""
    deadline = time.monotonic() + REGISTER_TIMEOUT
    while not all(consumer_position(src, job) for job in jobs.values()):
        check_running(master, "cubemux start", log_path("cubemux.log"))
        if time.monotonic() > deadline:
            raise DemoError("registering the consumers timed out after %d s; see %s"
                            % (REGISTER_TIMEOUT, log_path("cubemux.log")))
        time.sleep(0.2)
    say("every job registered its consumer: %s"
        % ", ".join(job.pgq_consumer_id for job in jobs.values()))


def run_workload(processes, src, jobs, master, args):
    output = log_path("pgbench.log")
    pgbench = processes.start("pgbench", [
        os.path.join(PG_BIN, "pgbench"), "-T", str(args.seconds),
        "-c", str(args.clients), "-j", str(min(args.clients, 2)),
        *client_args(SRC_DB)], output)
    started = last_status = time.monotonic()
    while pgbench.poll() is None:
        time.sleep(0.5)
        check_running(master, "cubemux start", log_path("cubemux.log"))
        now = time.monotonic()
        if now - last_status >= STATUS_INTERVAL:
            print_status(src, jobs, now - started)
            last_status = now
    processes.running.pop("pgbench")
    if pgbench.returncode != 0:
        raise DemoError("pgbench exited with code %d; see %s"
                        % (pgbench.returncode, output))
    for line in tail(output, 40):
        if line.startswith(("number of transactions actually processed", "tps")):
            say("pgbench: %s" % line.strip())


def wait_until_drained(src, jobs, master):
    """Wait until every job has consumed the tick that closes the workload."""
    targets = {}
    deadline = time.monotonic() + TICK_TIMEOUT
    for queue in jobs:
        tick_id, new_events = queue_tick(src, queue)
        while new_events:
            if time.monotonic() > deadline:
                raise DemoError("waiting for pgqd to tick queue %s timed out "
                                "after %d s; see %s"
                                % (queue, TICK_TIMEOUT, log_path("pgqd.log")))
            time.sleep(0.2)
            tick_id, new_events = queue_tick(src, queue)
        targets[queue] = tick_id

    started = time.monotonic()
    last_status = started
    while True:
        behind = [job for queue, job in jobs.items()
                  if consumer_position(src, job)[0] < targets[queue]]
        if not behind:
            break
        check_running(master, "cubemux start", log_path("cubemux.log"))
        now = time.monotonic()
        if now - started > DRAIN_TIMEOUT:
            raise DemoError("waiting for %s to reach the last tick timed out "
                            "after %d s; see %s"
                            % (", ".join(job.job_name for job in behind),
                               DRAIN_TIMEOUT, log_path("cubemux.log")))
        if now - last_status >= STATUS_INTERVAL:
            print_status(src, jobs, now - started)
            last_status = now
        time.sleep(0.2)
    say("the queues are drained: %s"
        % ", ".join("%s at tick %d" % (queue, tick) for queue, tick in targets.items()))


# The report.


def partitions_of(dst, table):
    """Return the names of TABLE's date partitions in the destination, oldest first."""
    rows = query(
        dst,
        "select c.relname from pg_catalog.pg_class c"
        " join pg_catalog.pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind = 'r'"
        " and c.relname ~ ('^' || %s || '_[0-9][0-9_]*$')"
        " order by c.relname", (table,))
    return [row[0] for row in rows]


def rows_of(conn, table, key, where=None):
    """Return [(key value, row as text)] of TABLE, or [(None, row text)] without KEY."""
    if key:
        key_sql = sql.SQL("t.{}").format(sql.Identifier(key))
    else:
        key_sql = sql.SQL("null")
    statement = sql.SQL("select {key}, t::text from only {table} t").format(
        key=key_sql, table=sql.Identifier(table))
    if where is not None:
        statement = statement + sql.SQL(" where ") + where
    return query(conn, statement)


def changed_rows(src, table, key):
    """Return {key: row text} of the source rows that the workload changed."""
    changed = sql.SQL("t.{key} in (select {key} from {history})").format(
        key=sql.Identifier(key), history=sql.Identifier(HISTORY_TABLE))
    return dict(rows_of(src, table, key, changed))


def check_keep_latest(src, dst, table, key, partitions):
    """Compare the newest partition row of each key with the source row."""
    expected = changed_rows(src, table, key)
    actual = {}
    for partition in partitions:
        actual.update(rows_of(dst, partition, key))
    if actual == expected:
        return len(expected), "ok"
    wrong = sorted(k for k in set(expected) | set(actual)
                   if expected.get(k) != actual.get(k))
    return len(expected), "FAILED: %d keys differ, first %s" % (len(wrong), wrong[:5])


def check_keep_all(src, dst, table, partitions):
    """Compare every partition row with the source rows, duplicates included."""
    expected = collections.Counter(text for _, text in rows_of(src, table, None))
    actual = collections.Counter()
    for partition in partitions:
        actual.update(text for _, text in rows_of(dst, partition, None))
    if actual == expected:
        return sum(expected.values()), "ok"
    missing = sum((expected - actual).values())
    extra = sum((actual - expected).values())
    check = "FAILED: %d rows missing, %d extra" % (missing, extra)
    return sum(expected.values()), check


def print_table(lines, numeric_columns):
    """Print LINES as aligned columns, the numeric ones aligned right."""
    widths = [max(len(str(line[column])) for line in lines)
              for column in range(len(lines[0]))]
    for line in lines:
        cells = []
        for column, cell in enumerate(line):
            if column in numeric_columns:
                cells.append(str(cell).rjust(widths[column]))
            else:
                cells.append(str(cell).ljust(widths[column]))
        print("  ".join(cells).rstrip())


def report(src, dst, jobs):
    """Print the partitions, their row counts and checks. Return True if all pass."""
    header = ("job", "mode", "partition", "rows", "source", "check")
    lines = []
    passed = True
    for queue, tables in QUEUE_TABLES.items():
        job = jobs[queue]
        for table, key in tables.items():
            partitions = partitions_of(dst, table)
            if not partitions:
                lines.append((job.job_name, job.mode, table, "-", "-",
                              "FAILED: no partition"))
                passed = False
                continue
            if job.mode == "keep_latest":
                source, check = check_keep_latest(src, dst, table, key, partitions)
            else:
                source, check = check_keep_all(src, dst, table, partitions)
            passed = passed and check == "ok"
            for index, partition in enumerate(partitions):
                count = query(dst, sql.SQL("select count(*) from only {}").format(
                    sql.Identifier(partition)))[0][0]
                first = index == 0
                lines.append((job.job_name, job.mode, "public." + partition, count,
                              source if first else "", check if first else ""))

    print()
    print_table([header, *lines], numeric_columns=(3, 4))
    print()
    print("rows: rows in the partition. source: rows of the source table that the "
          "workload changed\n(keep_latest) or inserted (keep_all). check: the "
          "partitions hold exactly those rows,\nand under keep_latest the latest "
          "version of each.")
    print()
    return report_ticks(src, dst, jobs) and passed


def report_ticks(src, dst, jobs):
    """Print each job's tick in the destination beside its tick on the queue."""
    passed = True
    for job in jobs.values():
        rows = query(dst, "select pgq_ext.get_last_tick(%s)", (job.pgq_consumer_id,))
        dst_tick = rows[0][0]
        queue_position = consumer_position(src, job)[0]
        check = "ok" if dst_tick == queue_position else "FAILED"
        passed = passed and check == "ok"
        print("%s: pgq_ext.completed_tick in %s is %s, the consumer's tick on queue "
              "%s is %s: %s" % (job.job_name, DST_DB, dst_tick, job.pgq_queue_name,
                                queue_position, check))
    return passed


# Main.


def write_pgqd_ini():
    path = log_path("pgqd.ini")
    with open(path, "w") as handle:
        handle.write(
            "[pgqd]\n"
            "base_connstr = host=%s port=%d user=%s\n"
            "initial_database = %s\n"
            "database_list = %s\n"
            "syslog = 0\n" % (DEMO_DIR, PORT, DB_USER, SRC_DB, SRC_DB))
    return path


def run_demo(processes, args):
    jobs = load_jobs()
    run_cubemux("check", JOBS_DIR)
    start_cluster()
    load_pgbench(args.scale)
    copy_table_definitions()
    src = connect(SRC_DB)
    dst = connect(DST_DB)
    try:
        add_queues_and_triggers(src)
        processes.start("pgqd", ["pgqd", write_pgqd_ini()], log_path("pgqd.log"))
        for job in jobs.values():
            run_cubemux("init-dst", job.path)

        # The pidfile puts the master's control socket next to it, apart from
        # the default socket that another master on this machine may use. The
        # master accepts a socket folder in /tmp only if its user owns it.
        os.mkdir(log_path("master"), 0o700)
        pidfile = log_path("master/cubemux.pid")
        master = processes.start(
            "cubemux start",
            [sys.executable, "-m", "cubemux", "start", JOBS_DIR, "--pidfile", pidfile],
            log_path("cubemux.log"))
        wait_for_consumers(src, jobs, master)
        say("running pgbench for %d s with %d clients" % (args.seconds, args.clients))
        run_workload(processes, src, jobs, master, args)
        wait_until_drained(src, jobs, master)
        run_cubemux("status", "--pidfile", pidfile)

        code = processes.stop("cubemux start")
        say("stopped cubemux start (pid %d) with SIGTERM, exit code %d"
            % (master.pid, code))
        if code != 0:
            raise DemoError("cubemux start exited with code %d after SIGTERM; see %s"
                            % (code, log_path("cubemux.log")))
        processes.stop("pgqd")
        passed = report(src, dst, jobs)
    finally:
        src.close()
        dst.close()
    if not passed:
        raise DemoError("the partitions differ from the source; see %s"
                        % log_path("cubemux.log"))
    say("done. Logs are in %s" % DEMO_DIR)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Run the jobs of jobs.d on a pgbench workload in a private "
        "PostgreSQL cluster in %s and check the partitions they fill." % DEMO_DIR)
    parser.add_argument("--seconds", type=int, default=20,
                        help="how long pgbench runs, in seconds (default: 20)")
    parser.add_argument("--clients", type=int, default=4,
                        help="pgbench client connections (default: 4)")
    parser.add_argument("--scale", type=int, default=1,
                        help="pgbench scale factor: 100000 accounts each (default: 1)")
    return parser.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    args = parse_args(argv)
    # SIGINT too, because a shell starts background commands with it ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    processes = Processes()
    cluster = Cluster(DEMO_DIR, port=PORT)
    try:
        lock = take_lock()
    except DemoError as error:
        print("demo failed: %s" % error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

    try:
        run_demo(processes, args)
        return 0
    except (DemoError, ConfigError, RuntimeError, psycopg2.Error) as error:
        print("demo failed: %s" % str(error).strip(), file=sys.stderr)
        lines = tail(log_path("cubemux.log"))
        if lines:
            print("last lines of %s:" % log_path("cubemux.log"), file=sys.stderr)
            sys.stderr.writelines(lines)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted, stopping what it started", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C must not cut the cleanup short.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        processes.stop_all()
        cluster.stop()
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
