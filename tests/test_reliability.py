"""Exactly once through worker kills, a second host and database outages."""

import os
import random
import signal
import subprocess
import sys
import time

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
