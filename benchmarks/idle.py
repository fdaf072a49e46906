"""CPU time of a master and its workers while every job is idle.

Starts ``cubemux start DIR`` with one job file per consumer of an empty queue
(default loop_delay) and waits until every worker runs. Then it reads the CPU
time (utime + stime) of the master and its workers from /proc/PID/stat at the
start and at the end of the measured interval. The database server's CPU
time is reported apart.
"""

import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Seconds after the last worker appeared before the measurement starts, so
# that connecting, registering and installing the tracking schema are over.
SETTLE_SECONDS = 10.0
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


def cpu_seconds(pid):
    """Return the CPU time (user + system) of PID in seconds, or None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name in brackets may contain spaces, so split after it.
    fields = text[text.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def children(pid):
    """Return the pids of PID's child processes."""
    found = []
    try:
        threads = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return found
    for thread in threads:
        try:
            with open("/proc/%d/task/%s/children" % (pid, thread)) as handle:
                found.extend(int(text) for text in handle.read().split())
        except FileNotFoundError:
            continue
    return found


def total_cpu(pids):
    """Return {pid: CPU seconds} of the PIDS that still run."""
    times = {}
    for pid in pids:
        seconds = cpu_seconds(pid)
        if seconds is not None:
            times[pid] = seconds
    return times


def write_jobs(folder, count, src_db, dst_db, queue):
    os.makedirs(folder)
    for number in range(1, count + 1):
        name = "idle_%02d" % number
        with open(os.path.join(folder, name + ".ini"), "w") as handle:
            handle.write("[cube_dispatcher]\n")
            handle.write("src_db = %s\n" % src_db)
            handle.write("dst_db = %s\n" % dst_db)
            handle.write("pgq_queue_name = %s\n" % queue)
            handle.write("pgq_consumer_id = %s\n" % name)
            handle.write("mode = keep_all\n")


def server_pids(bench):
    """Return the postmaster's pid and its children's."""
    with open(os.path.join(bench.cluster.data_dir, "postmaster.pid")) as handle:
        postmaster = int(handle.readline())
    return [postmaster, *children(postmaster)]


def measure(bench, count, seconds):
    """Measure COUNT idle jobs for SECONDS. Return the figures as a dict."""
    print("idle: %d jobs, default loop_delay" % count, flush=True)
    queue = "bench_idle"
    with bench.connect(bench.src_db) as conn, conn.cursor() as cur:
        cur.execute("select pgq.create_queue(%s)", (queue,))
    dst_db = bench.destination("dst_idle")
    folder = os.path.join(bench.folder, "idle_jobs")
    write_jobs(folder, count, bench.src_db, dst_db, queue)

    master = subprocess.Popen([sys.executable, "-m", "cubemux", "start", "-q", folder],
                              cwd=ROOT)
    try:
        workers = _wait_for_workers(master, count)
        time.sleep(SETTLE_SECONDS)

        pids = [master.pid, *children(master.pid)]
        servers = server_pids(bench)
        before = total_cpu(pids)
        server_before = total_cpu(servers)
        started = time.monotonic()
        time.sleep(seconds)
        after = total_cpu(pids)
        server_after = total_cpu(servers)
        elapsed = time.monotonic() - started
        current = set(children(master.pid))
    finally:
        _stop(master)

    if master.returncode not in (0, -signal.SIGTERM):
        print("  the master exited with code %s" % master.returncode)
    used = sum(after[pid] - before[pid] for pid in after if pid in before)
    server_used = sum(server_after[pid] - server_before[pid]
                      for pid in server_after if pid in server_before)
    result = {
        "jobs": count,
        "workers_at_start": len(workers),
        "workers_replaced": len(set(workers) - current),
        "seconds": elapsed,
        "cpu_percent_of_one_core": 100 * used / elapsed,
        "master_cpu_percent": 100 * (after.get(master.pid, 0)
                                     - before.get(master.pid, 0)) / elapsed,
        "server_cpu_percent": 100 * server_used / elapsed,
    }
    print("  master and workers: %.2f%% of one core over %.0f s (master alone "
          "%.2f%%); database server %.2f%%; workers replaced: %d"
          % (result["cpu_percent_of_one_core"], elapsed, result["master_cpu_percent"],
             result["server_cpu_percent"], result["workers_replaced"]), flush=True)
    return result


def _wait_for_workers(master, count):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if master.poll() is not None:
            raise RuntimeError("the master exited with code %s" % master.returncode)
        workers = children(master.pid)
        if len(workers) >= count:
            return workers
        time.sleep(0.5)
    raise RuntimeError("the master did not start %d workers in %.0f s"
                       % (count, START_TIMEOUT))


def _stop(master):
    """Stop the master that this module started, by its pid."""
    if master.poll() is not None:
        return
    master.send_signal(signal.SIGTERM)
    try:
        master.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        master.kill()
        master.wait()
