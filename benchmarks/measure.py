"""One measurement in a process of its own, so that its peak RSS is its own.

Usage: ``measure.py KIND SETTINGS_JSON``. The result is one JSON object on
stdout: ``events``, ``seconds`` and ``peak_rss_kb`` (VmHWM of this process),
plus what the kind adds. KIND is one of:

- ``read``: read the batch through a cursor as the worker does (without
  ev_time, which the benchmark's job does not use), without decoding it.
  The raw PgQ read rate.
- ``copy``: decode the batch untimed into COPY files, one per table, then
  time only COPY of those files into empty tables like the partitions but
  without primary keys. The raw COPY rate of the same rows.
- ``worker``: cubemux's worker applies the batch (run_once).
- ``reference``: the per-statement reference applies the batch.
"""

import json
import os
import sys
import tempfile
import time

import psycopg2
from psycopg2 import sql

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import reference  # noqa: E402
from cubemux import copytext, pgq  # noqa: E402
from cubemux.config import load_job  # noqa: E402
from cubemux.events import decode_event  # noqa: E402
from cubemux.worker import Reporter, Worker  # noqa: E402


def peak_rss_kb():
    """Return this process's peak resident set size in KiB (VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def _open_batch(settings):
    conn = psycopg2.connect(settings["src_db"])
    batch = pgq.next_batch(conn, settings["queue"], settings["consumer"], "")
    if batch is None:
        raise SystemExit("consumer %s has no batch on queue %s"
                         % (settings["consumer"], settings["queue"]))
    return conn, batch


def measure_read(settings):
    conn, batch = _open_batch(settings)
    started = time.perf_counter()
    events = 0
    for _row in pgq.iter_events(conn, batch.batch_id, with_time=False):
        events += 1
    seconds = time.perf_counter() - started
    pgq.finish_batch(conn, batch.batch_id)
    conn.close()
    return {"events": events, "seconds": seconds}


def measure_copy(settings):
    conn, batch = _open_batch(settings)
    folder = tempfile.mkdtemp(prefix="cubemux-bench-copy-")
    files = {}
    columns = {}
    events = 0
    for ev_id, _time, ev_type, ev_data, extra1, extra2 in pgq.iter_events(
            conn, batch.batch_id):
        event = decode_event(ev_id, ev_type, ev_data, extra1, extra2)
        handle = files.get(event.table)
        if handle is None:
            handle = open(os.path.join(folder, event.table), "w", encoding="utf-8")
            files[event.table] = handle
            columns[event.table] = event.columns
        handle.write(copytext.encode_row(event.values))
        events += 1
    pgq.finish_batch(conn, batch.batch_id)
    conn.close()
    for handle in files.values():
        handle.close()

    dst = psycopg2.connect(settings["dst_db"])
    seconds = 0.0
    with dst.cursor() as cur:
        for table, names in columns.items():
            target = sql.Identifier("public", "copy_" + table)
            cur.execute(sql.SQL("create table {} (like {} including defaults)").format(
                target, sql.Identifier("public", table)))
            statement = sql.SQL("copy {} ({}) from stdin").format(
                target, sql.SQL(", ").join(map(sql.Identifier, names)))
            path = os.path.join(folder, table)
            with open(path, encoding="utf-8") as data:
                started = time.perf_counter()
                cur.copy_expert(statement.as_string(dst), data, size=1 << 20)
                dst.commit()
                seconds += time.perf_counter() - started
            os.unlink(path)
    dst.close()
    os.rmdir(folder)
    return {"events": events, "seconds": seconds}


class _CountingReporter(Reporter):
    def __init__(self):
        self.counts = None

    def batch_done(self, batch, counts, seconds):
        self.counts = counts


def measure_worker(settings):
    reporter = _CountingReporter()
    worker = Worker(load_job(settings["job_file"]), reporter)
    worker.start()
    started = time.perf_counter()
    if not worker.run_once():
        raise SystemExit("the worker found no batch")
    seconds = time.perf_counter() - started
    worker.close()
    return {"events": sum(reporter.counts.events.values()), "seconds": seconds}


def measure_reference(settings):
    applier = reference.ReferenceConsumer(
        settings["src_db"], settings["dst_db"], settings["queue"],
        settings["consumer"], settings["mode"])
    started = time.perf_counter()
    events = applier.run_batch()
    seconds = time.perf_counter() - started
    applier.close()
    return {"events": events, "seconds": seconds}


KINDS = {
    "read": measure_read,
    "copy": measure_copy,
    "worker": measure_worker,
    "reference": measure_reference,
}


def main(argv):
    kind, settings = argv[1], json.loads(argv[2])
    result = KINDS[kind](settings)
    result["peak_rss_kb"] = peak_rss_kb()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
