"""Exactly once through worker kills, a second host and database outages."""

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psycopg2
import pytest

from cubemux import tracking
from streams import (Ticker, Workload, all_versions, create_tables,
                     latest_matches_source, wait_caught_up)

CUBEMUX = [sys.executable, "-m", "cubemux"]


def start_run(path, log_path):
    log = open(log_path, "ab")
    return subprocess.Popen([*CUBEMUX, "run", path], stdout=log, stderr=log)


def stop_gracefully(process, timeout=30):
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout)


def check_destination(setup, mode, consumer):
    if mode == "keep_latest":
        expected, actual = latest_matches_source(setup)
    else:
        expected, actual = all_versions(setup, setup.dst_query)
    assert len(actual) == len(expected)
    assert actual == expected
    (queue_tick,) = setup.src_query(
        "select last_tick from pgq.get_consumer_info(%s, %s)", (setup.queue, consumer))[0]
    assert tracking.get_last_tick(setup.dst, consumer) == queue_tick


@pytest.mark.parametrize("mode", ["keep_latest", "keep_all"])
def test_kill9_worker_twenty_times(setup, tmp_path, mode):
    create_tables(setup)
    path = setup.job_file("job", mode=mode, dateformat="YYYY", loop_delay="0.05")
    subprocess.run([*CUBEMUX, "init-dst", path], check=True, capture_output=True)
    process = start_run(path, tmp_path / "run.log")
    time.sleep(1.0)  # Registered before the first event.
    ticker = Ticker(setup.src_dsn)
    ticker.start()
    workload = Workload(setup.src_dsn, count=100000, deletes=mode == "keep_latest")
    workload.start()
    chooser = random.Random(7)
    kills = 0
    try:
        while kills < 20 or workload.is_alive():
            time.sleep(chooser.uniform(0.3, 1.2))
            process.kill()
            process.wait(10)
            kills += 1
            process = start_run(path, tmp_path / "run.log")
        workload.join()
        assert workload.error is None
        wait_caught_up(setup, ["job"])
    finally:
        ticker.stop()
        stop_gracefully(process)

    assert kills >= 20
    assert workload.made >= 100000
    check_destination(setup, mode, "job")


def _active_and_standby(processes, logs, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = [b"standby:" in open(log, "rb").read() for log in logs]
        if waiting.count(True) == 1:
            active = waiting.index(False)
            return processes[active], processes[1 - active], logs[1 - active]
        time.sleep(0.1)
    raise AssertionError("no worker became the standby")


def test_standby_takes_over_after_kill(setup, tmp_path):
    create_tables(setup)
    path = setup.job_file("job", mode="keep_latest", dateformat="YYYY",
                          loop_delay="0.1")
    subprocess.run([*CUBEMUX, "init-dst", path], check=True, capture_output=True)
    logs = [tmp_path / "host1.log", tmp_path / "host2.log"]
    first = start_run(path, logs[0])
    time.sleep(1.0)
    second = start_run(path, logs[1])
    ticker = Ticker(setup.src_dsn)
    ticker.start()
    workload = Workload(setup.src_dsn, count=30000)
    workload.start()
    try:
        active, standby, standby_log = _active_and_standby([first, second], logs)
        time.sleep(2.0)
        active.kill()
        active.wait(10)
        killed_at = time.monotonic()
        while b"took over queue" not in open(standby_log, "rb").read():
            assert time.monotonic() - killed_at < 10, "the standby did not take over"
            time.sleep(0.1)
        workload.join()
        wait_caught_up(setup, ["job"])
    finally:
        ticker.stop()
        for process in (first, second):
            if process.poll() is None:
                stop_gracefully(process)
    check_destination(setup, "keep_latest", "job")


@pytest.fixture
def own_clusters(cluster_root, tmp_path):
    """A source and a destination cluster that this test may stop and restart."""
    from conftest import Setup, _start_cluster

    name = os.path.basename(str(tmp_path))[-12:]
    src = _start_cluster(cluster_root, "outage-src-" + name, 5611)
    dst = _start_cluster(cluster_root, "outage-dst-" + name, 5612)
    env = Setup(src, dst, tmp_path)
    yield env
    env.close()
    src.destroy()
    dst.destroy()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _health(url):
    """Return (HTTP status of /healthz, value of cubemux_worker_up for the job)."""
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        status = error.code
    with urllib.request.urlopen(url + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    up = [line for line in text.splitlines()
          if line.startswith('cubemux_worker_up{job="job"')]
    return status, float(up[0].split()[-1]) if up else None


def _outage(cluster, seconds, master, url):
    """Stop CLUSTER for SECONDS. Return what status and metrics showed meanwhile."""
    cluster.stop()
    stopped_at = time.monotonic()
    seen = set()
    while time.monotonic() - stopped_at < seconds:
        state = master.job("job")["state"]
        status, up = _health(url)
        seen.add((state, status, up))
        time.sleep(0.5)
    cluster.start()
    return seen


def test_outages_lose_nothing(own_clusters, tmp_path):
    from masterproc import MasterProcess, wait_for

    setup = own_clusters
    create_tables(setup)
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    setup.tmp_path = jobs_dir
    path = setup.job_file("job", mode="keep_latest", dateformat="YYYY", loop_delay="0.1",
                          max_backoff="2")
    subprocess.run([*CUBEMUX, "init-dst", path], check=True, capture_output=True)
    port = _free_port()
    url = "http://127.0.0.1:%d" % port
    master = MasterProcess(jobs_dir, tmp_path,
                           extra_args=["--metrics-port", str(port)]).start()
    master.wait_running("job")
    ticker = Ticker(setup.src_dsn)
    ticker.start()
    workload = Workload(setup.src_dsn, count=40000, per_transaction=20, pause=0.02)
    workload.start()
    try:
        time.sleep(2)
        setup.src_cluster.restart()
        time.sleep(2)
        setup.dst_cluster.restart()
        time.sleep(2)
        during_source = _outage(setup.src_cluster, 30, master, url)
        wait_for(lambda: master.job("job")["state"] == "running", 30,
                 "the job to run again after the source outage")
        assert workload.is_alive(), "the stream ended before the last outage"
        during_destination = _outage(setup.dst_cluster, 30, master, url)
        workload.join()
        assert workload.error is None
        setup.src.close()
        setup.dst.close()
        setup.src = psycopg2.connect(setup.src_dsn)
        setup.src.autocommit = True
        setup.dst = psycopg2.connect(setup.dst_dsn)
        setup.dst.autocommit = True
        wait_caught_up(setup, ["job"])
        after = _health(url)
    finally:
        ticker.stop()
        master.close()

    for seen in (during_source, during_destination):
        assert any(state == "backoff" for state, _, _ in seen), seen
        assert any(status == 503 for _, status, _ in seen), seen
        assert any(up == 0 for _, _, up in seen), seen
    assert after == (200, 1.0)
    assert "database error" in master.log()
    check_destination(setup, "keep_latest", "job")


def test_two_masters_failover(setup, tmp_path):
    from masterproc import MasterProcess, wait_for

    create_tables(setup)
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    setup.tmp_path = jobs_dir
    path = setup.job_file("job", mode="keep_latest", dateformat="YYYY", loop_delay="0.1",
                          worker_timeout="5")
    subprocess.run([*CUBEMUX, "init-dst", path], check=True, capture_output=True)
    hosts = []
    for name in ("host1", "host2"):
        work = tmp_path / name
        work.mkdir()
        hosts.append(MasterProcess(jobs_dir, work).start())
    ticker = Ticker(setup.src_dsn)
    ticker.start()
    workload = Workload(setup.src_dsn, count=30000, pause=0.01)
    workload.start()
    try:
        for host in hosts:
            host.wait_running("job")

        def roles():
            standby = [host.job("job").get("standby") for host in hosts]
            return standby if standby.count(True) == 1 else None

        standby = wait_for(roles, 30, "one master to hold the queue")
        active = hosts[standby.index(False)]
        waiting = hosts[standby.index(True)]
        time.sleep(2.0)
        # The active host dies: its master and its worker at once.
        doomed = [active.pid, *active.worker_pids()]
        for pid in doomed:
            os.kill(pid, signal.SIGKILL)
        active.process.wait(10)
        died_at = time.monotonic()
        wait_for(lambda: not waiting.job("job").get("standby"), 15,
                 "the standby master to take over")
        took_over = time.monotonic() - died_at
        workload.join()
        assert workload.error is None
        wait_caught_up(setup, ["job"])
    finally:
        ticker.stop()
        for host in hosts:
            host.close()

    assert took_over < 10
    check_destination(setup, "keep_latest", "job")


def test_garbage_job_files_spare_other_jobs(setup, tmp_path):
    from masterproc import MasterProcess, wait_for

    setup.table("create table public.item (id int primary key, v text)", "public.item")
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    setup.tmp_path = jobs_dir
    setup.job_file("good", mode="keep_latest")
    master = MasterProcess(jobs_dir, tmp_path).start()
    try:
        pid = master.wait_running("good")["good"]
        chooser = random.Random(11)
        garbage = [
            b"\x00\xff\xfe garbage",
            b"[cube_dispatcher]\nmode = keep_some\nloop_delay = -3\n",
            b"[cube_dispatcher\nsrc_db\n",
            b"no section at all = 1\n",
            "[cube_dispatcher]\nsrc_db = %(nope)s\n".encode(),
            b"[cube_dispatcher]\n" + b"x" * 100000 + b"\n",
        ]
        garbage += [bytes(chooser.randrange(256) for _ in range(200)) for _ in range(4)]
        for number, content in enumerate(garbage):
            (jobs_dir / ("garbage%02d.ini" % number)).write_bytes(content)
        master.send_signal(signal.SIGHUP)
        wait_for(lambda: len(master.jobs()) == 1 + len(garbage), 30,
                 "the garbage files to show as jobs")

        jobs = master.jobs()
        assert jobs["good"]["pid"] == pid
        assert jobs["good"]["state"] == "running"
        assert all(job["state"] == "fatal" for name, job in jobs.items()
                   if name != "good")
        setup.src_exec("insert into item values (1, 'still flowing')")
        setup.tick()
        wait_for(lambda: setup.dst_query(
            "select count(*) from pg_tables where tablename like 'item\\_%'")[0][0], 30,
            "the good job to apply a batch")
        assert master.process.poll() is None
    finally:
        master.close()
