"""Exactly once through worker kills, a second host and database outages."""

import os
import random
import signal
import subprocess
import sys
import time

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


def _outage(cluster, seconds):
    cluster.stop()
    time.sleep(seconds)
    cluster.start()


def test_outages_lose_nothing(own_clusters, tmp_path):
    setup = own_clusters
    create_tables(setup)
    path = setup.job_file("job", mode="keep_latest", dateformat="YYYY", loop_delay="0.1",
                          max_backoff="2")
    subprocess.run([*CUBEMUX, "init-dst", path], check=True, capture_output=True)
    log_path = tmp_path / "run.log"
    process = start_run(path, log_path)
    time.sleep(1.0)
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
        _outage(setup.src_cluster, 30)
        time.sleep(2)
        assert workload.is_alive(), "the stream ended before the last outage"
        _outage(setup.dst_cluster, 30)
        workload.join()
        assert workload.error is None
        setup.src.close()
        setup.dst.close()
        setup.src = psycopg2.connect(setup.src_dsn)
        setup.src.autocommit = True
        setup.dst = psycopg2.connect(setup.dst_dsn)
        setup.dst.autocommit = True
        wait_caught_up(setup, ["job"])
    finally:
        ticker.stop()
        stop_gracefully(process)

    log = open(log_path, encoding="utf-8").read()
    assert "retrying in" in log
    assert process.returncode == 0
    check_destination(setup, "keep_latest", "job")
