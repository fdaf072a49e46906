"""Benchmark cubemux's worker against a per-statement reference.

Starts a private PostgreSQL cluster (unix socket only) in a temporary folder
and builds a reproducible workload of logutriga events per mode. On the same
batch it measures, each in a process of its own, the raw PgQ read rate, the
raw COPY rate of the same rows, cubemux's worker and the per-statement
reference. Then it measures the CPU time that a master with idle jobs costs.
The cluster is stopped and removed at the end.

Usage: .venv/bin/python benchmarks/run.py --events 1000000
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import psycopg2
from psycopg2 import sql

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(1, ROOT)

import idle  # noqa: E402
import workload  # noqa: E402
from cubemux.devcluster import PG_BIN, Cluster  # noqa: E402

MODES = ("keep_all", "keep_latest")
KINDS = ("read", "copy", "worker", "reference")

# Consumers registered on each queue: one per measurement.
CONSUMERS = {kind: "bench_" + kind for kind in KINDS}

# Server settings of the benchmark's cluster, on top of devcluster's (fsync
# off, unix socket only). Autovacuum is off so that it does not start in the
# middle of a measurement, and checkpoints are spaced so that none lands in one.
CLUSTER_SETTINGS = """
shared_buffers = '256MB'
max_wal_size = '8GB'
checkpoint_timeout = '30min'
autovacuum = off
"""


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="events per mode, all in one batch (default: 1000000)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="comma-separated modes to measure (default: %(default)s)")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the per-statement reference, the slowest part")
    parser.add_argument("--idle-jobs", type=int, default=50,
                        help="idle jobs under one master; 0 skips (default: 50)")
    parser.add_argument("--idle-seconds", type=float, default=60.0,
                        help="how long to measure the idle master's CPU time "
                        "(default: 60)")
    parser.add_argument("--port", type=int, default=5620,
                        help="port number of the private cluster's unix socket "
                        "(default: 5620)")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the results to FILE as JSON")
    return parser.parse_args(argv)


def describe_machine():
    """Return the facts about the machine that the results depend on."""
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        memory_kb = int(meminfo.readline().split()[1])
    server = subprocess.run([os.path.join(PG_BIN, "postgres"), "--version"],
                            capture_output=True, text=True).stdout.strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "postgresql": server,
        "psycopg2": psycopg2.__version__.split()[0],
    }


class Bench:
    """The private cluster, its source database and one destination per run."""

    def __init__(self, folder, port):
        self.folder = folder
        self.cluster = Cluster(os.path.join(folder, "cluster"), port=port,
                               settings=CLUSTER_SETTINGS)
        self.src_db = self.cluster.dsn("src")

    def start(self):
        self.cluster.init()
        self.cluster.start()
        self.cluster.createdb("src")
        with self.connect(self.src_db) as conn, conn.cursor() as cur:
            cur.execute("create extension pgq")
            workload.source_tables(cur)

    def stop(self):
        self.cluster.destroy()

    def settle(self):
        """Write out what earlier steps left in memory, before a measurement.

        Otherwise the server and the kernel write the previous step's rows
        and WAL while the next measurement runs, and slow it down.
        """
        with self.connect(self.cluster.dsn()) as conn, conn.cursor() as cur:
            cur.execute("checkpoint")
        os.sync()

    @staticmethod
    def connect(dsn):
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        return conn

    def destination(self, name):
        """Create database NAME with the parent tables. Return its DSN."""
        self.cluster.createdb(name)
        dsn = self.cluster.dsn(name)
        with self.connect(dsn) as conn, conn.cursor() as cur:
            workload.destination_tables(cur)
        return dsn

    def prepare(self, mode, events):
        """Create the mode's queue and consumers, and write one batch of events.

        Return the events written per operation.
        """
        queue = "bench_" + mode
        conn = self.connect(self.src_db)
        with conn.cursor() as cur:
            cur.execute("select pgq.create_queue(%s)", (queue,))
            for consumer in CONSUMERS.values():
                cur.execute("select pgq.register_consumer(%s, %s)", (queue, consumer))
            workload.attach_triggers(cur, queue)
        conn.autocommit = False
        started = time.perf_counter()
        with conn.cursor() as cur:
            written = workload.generate(cur, mode, events)
        conn.commit()
        conn.autocommit = True
        print("  wrote %d events (%s) in %.1f s" % (
            sum(written.values()), ", ".join("%s %d" % item for item in written.items()),
            time.perf_counter() - started), flush=True)
        tick(conn, queue)
        conn.close()
        return queue, written

    def job_file(self, mode, queue, dst_db):
        path = os.path.join(self.folder, "bench_%s.ini" % mode)
        with open(path, "w") as handle:
            handle.write("[cube_dispatcher]\n")
            handle.write("job_name = bench_%s\n" % mode)
            handle.write("src_db = %s\n" % self.src_db)
            handle.write("dst_db = %s\n" % dst_db)
            handle.write("pgq_queue_name = %s\n" % queue)
            handle.write("pgq_consumer_id = %s\n" % CONSUMERS["worker"])
            handle.write("mode = %s\n" % mode)
        return path


def tick(conn, queue):
    """Close a tick on QUEUE, so the events written so far form a batch."""
    with conn.cursor() as cur:
        cur.execute("select pgq.force_tick(%s)", (queue,))
        before = cur.fetchone()[0]
        for _ in range(500):
            cur.execute("select pgq.ticker()")
            cur.execute("select last_tick_id from pgq.get_queue_info(%s)", (queue,))
            if cur.fetchone()[0] != before:
                return
            time.sleep(0.01)
    raise RuntimeError("queue %s did not tick" % queue)


def run_measurement(kind, settings):
    """Run one measurement in a child process and return its result."""
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "measure.py"), kind, json.dumps(settings)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError("measurement %s failed with exit code %d"
                           % (kind, result.returncode))
    return json.loads(result.stdout.strip().splitlines()[-1])


def table_digests(dsn):
    """Return {partition: (rows, sum of row hashes)} of the benchmark's partitions."""
    with Bench.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("select relname from pg_catalog.pg_class"
                    " where relkind = 'r' and relnamespace = 'public'::regnamespace"
                    " and relname ~ '^(narrow|wide)_'")
        names = sorted(row[0] for row in cur.fetchall())
        digests = {}
        for name in names:
            cur.execute(sql.SQL(
                "select count(*), coalesce(sum(hashtext(t::text)::bigint), 0)"
                " from {} t").format(sql.Identifier("public", name)))
            digests[name] = tuple(cur.fetchone())
    return digests


def measure_mode(bench, mode, args):
    print("%s:" % mode, flush=True)
    queue, written = bench.prepare(mode, args.events)
    results = {"written": written}
    dsts = {}
    for kind in KINDS:
        if kind == "reference" and args.no_reference:
            continue
        dst_db = bench.destination("dst_%s_%s" % (kind, mode))
        dsts[kind] = dst_db
        settings = {"src_db": bench.src_db, "dst_db": dst_db, "queue": queue,
                    "consumer": CONSUMERS[kind], "mode": mode}
        if kind == "worker":
            settings["job_file"] = bench.job_file(mode, queue, dst_db)
        bench.settle()
        result = run_measurement(kind, settings)
        result["events_per_second"] = result["events"] / result["seconds"]
        results[kind] = result
        print("  %-9s %9d events in %6.2f s: %9.0f events/s, peak RSS %5.1f MB"
              % (kind, result["events"], result["seconds"],
                 result["events_per_second"], result["peak_rss_kb"] / 1024),
              flush=True)

    if "reference" in dsts:
        same = table_digests(dsts["worker"]) == table_digests(dsts["reference"])
        results["same_result"] = same
        print("  worker and reference partitions equal: %s" % same, flush=True)
        results["ratio"] = (results["worker"]["events_per_second"]
                            / results["reference"]["events_per_second"])
    read_rate = results["read"]["events_per_second"]
    copy_rate = results["copy"]["events_per_second"]
    results["read_plus_copy_limit"] = 1 / (1 / read_rate + 1 / copy_rate)
    results["share_of_limit"] = (results["worker"]["events_per_second"]
                                 / results["read_plus_copy_limit"])
    print("  read-plus-COPY limit %.0f events/s; worker at %.0f%% of it"
          % (results["read_plus_copy_limit"], 100 * results["share_of_limit"]))
    if "ratio" in results:
        print("  worker / reference: %.1fx" % results["ratio"])
    return results


def main(argv=None):
    args = parse_args(argv)
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    for mode in modes:
        if mode not in MODES:
            raise SystemExit("invalid mode %r: expected %s" % (mode, " or ".join(MODES)))
    machine = describe_machine()
    print("machine: %(cpu)s, %(cores)d cores, %(memory_gib)s GiB; %(postgresql)s; "
          "Python %(python)s, psycopg2 %(psycopg2)s" % machine)
    print("load average before start: %.2f %.2f %.2f" % machine["load_average"])

    folder = tempfile.mkdtemp(prefix="cubemux-bench-")
    os.chmod(folder, 0o755)
    bench = Bench(folder, args.port)
    results = {"machine": machine, "events": args.events, "modes": {}}
    try:
        bench.start()
        for mode in modes:
            results["modes"][mode] = measure_mode(bench, mode, args)
        if args.idle_jobs:
            results["idle"] = idle.measure(bench, args.idle_jobs, args.idle_seconds)
    finally:
        bench.stop()
        shutil.rmtree(folder, ignore_errors=True)
    results["load_average_after"] = os.getloadavg()
    print("load average after: %.2f %.2f %.2f" % results["load_average_after"])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
