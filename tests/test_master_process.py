"""The master as a real process: forked workers on real PostgreSQL and pgq.

Each test starts ``cubemux start DIR`` with its own control socket, finds
the workers through the status response, and signals only processes that it
started itself.
"""

import os
import signal
import time

import psycopg2
import pytest

from masterproc import MasterProcess, children_of, process_alive, run_cubemux, wait_for

ITEM_DDL = "create table public.item (id int primary key, name text)"


@pytest.fixture
def jobs_dir(setup, tmp_path):
    directory = tmp_path / "jobs"
    directory.mkdir()
    setup.tmp_path = directory
    return directory


@pytest.fixture
def masters():
    """Start MasterProcess instances; stop whatever still runs afterwards."""
    started = []

    def start(*args, **kwargs):
        master = MasterProcess(*args, **kwargs)
        started.append(master)
        return master.start()

    yield start
    for master in started:
        master.close()


def reaped(pid):
    """Return True once PID has exited and its parent has collected it."""
    return not os.path.exists("/proc/%d" % pid)


def test_killed_worker_restarted_within_backoff(setup, jobs_dir, tmp_path, masters):
    setup.job_file("alpha")
    setup.job_file("beta")
    master = masters(jobs_dir, tmp_path)
    pids = master.wait_running("alpha", "beta")

    killed_at = time.time()
    os.kill(pids["alpha"], signal.SIGKILL)
    wait_for(lambda: reaped(pids["alpha"]), 5, "the master to reap the worker")
    job = master.wait_job("alpha", lambda job: job["state"] == "running"
                          and job["pid"] != pids["alpha"], "a new running worker")

    # The first delay is 1 s plus up to 10 % jitter; the rest is loop slack.
    assert 1.0 <= job["started_at"] - killed_at <= 1.6
    assert job["restarts"] == 1
    assert "killed by SIGKILL" in master.log()
    beta = master.job("beta")
    assert beta["pid"] == pids["beta"]
    assert beta["restarts"] == 0


def test_frozen_worker_killed_after_worker_timeout(setup, jobs_dir, tmp_path,
                                                   masters):
    setup.job_file("alpha", worker_timeout=2)
    master = masters(jobs_dir, tmp_path)
    old_pid = master.wait_running("alpha")["alpha"]

    stopped_at = time.time()
    os.kill(old_pid, signal.SIGSTOP)
    try:
        job = master.wait_job("alpha", lambda job: job["state"] == "running"
                              and job["pid"] != old_pid, "a new running worker")
    finally:
        if process_alive(old_pid):
            os.kill(old_pid, signal.SIGKILL)
    assert reaped(old_pid)
    # Silent past worker_timeout (2 s), counted from the last beat, which can
    # come up to one beat interval before the SIGSTOP; then the 1 s backoff.
    assert 2.0 <= job["started_at"] - stopped_at <= 6.0
    assert job["restarts"] == 1
    assert "killing: worker pid %d was silent" % old_pid in master.log()


def test_reload_add_remove_change_broken(setup, jobs_dir, tmp_path, masters):
    for name in ("keep", "remove", "change", "broken"):
        setup.job_file(name)
    master = masters(jobs_dir, tmp_path)
    pids = master.wait_running("keep", "remove", "change", "broken")

    os.unlink(jobs_dir / "remove.ini")
    setup.job_file("change", loop_delay="0.2")
    setup.job_file("broken", mode="keep_nothing")
    setup.job_file("added")
    master.send_signal(signal.SIGHUP)

    master.wait_job("change", lambda job: job["state"] == "running"
                    and job["pid"] != pids["change"], "a new worker")
    master.wait_running("added")
    wait_for(lambda: "remove" not in master.jobs(), 30, "job remove to go")
    wait_for(lambda: reaped(pids["remove"]), 10, "the removed job's worker to exit")
    wait_for(lambda: reaped(pids["change"]), 10, "the changed job's old worker")

    jobs = master.jobs()
    assert sorted(jobs) == ["added", "broken", "change", "keep"]
    assert jobs["keep"]["pid"] == pids["keep"]
    assert jobs["keep"]["state"] == "running"
    assert jobs["broken"]["pid"] == pids["broken"]
    assert jobs["broken"]["state"] == "running"
    assert jobs["change"]["restarts"] == 0
    log = master.log()
    assert "invalid job file: %s" % (jobs_dir / "broken.ini") in log
    assert "kept the job running with its previous settings" in log


def _destination_rows(setup, table):
    exists = setup.dst_query("select to_regclass(%s) is not null", (table,))[0][0]
    if not exists:
        return 0
    return setup.dst_query("select count(*) from %s" % table)[0][0]


def _block_tick_writes(setup):
    """Lock pgq_ext.completed_tick so that a batch waits before its commit."""
    blocker = psycopg2.connect(setup.dst_dsn)
    with blocker.cursor() as cur:
        cur.execute("lock table pgq_ext.completed_tick in exclusive mode")
    return blocker


def _start_blocked_batch(setup, master, rows):
    """Queue ROWS events in one batch and wait until the worker waits on the lock."""
    master.wait_running("alpha")
    blocker = _block_tick_writes(setup)
    setup.src_exec("insert into item select i, 'n' || i from generate_series(1, %s) i",
                   (rows,))
    tick = setup.tick()
    master.wait_job("alpha", lambda job: job["batch_open_since"] is not None,
                    "an open batch")

    def worker_waits():
        return setup.dst_query(
            "select count(*) from pg_stat_activity where datname = %s"
            " and wait_event_type = 'Lock' and application_name = 'cubemux'",
            (setup.dst_name,))[0][0]
    wait_for(worker_waits, 30, "the worker to wait on the tick lock")
    return blocker, tick


def _partition(setup):
    suffix = setup.src_query("select to_char(tick_time, 'YYYY_MM_DD') from pgq.tick"
                             " order by tick_id desc limit 1")[0][0]
    return "public.item_%s" % suffix


def _completed_tick(setup, consumer):
    return setup.dst_query("select pgq_ext.get_last_tick(%s)", (consumer,))[0][0]


def test_graceful_stop_mid_batch_commits_whole(setup, jobs_dir, tmp_path, masters):
    setup.table(ITEM_DDL, "public.item")
    setup.job_file("alpha")
    master = masters(jobs_dir, tmp_path, graceful_timeout=60)
    blocker, tick = _start_blocked_batch(setup, master, 500)

    master.send_signal(signal.SIGINT)
    master.wait_job("alpha", lambda job: job["state"] == "stopping", "stopping")
    assert _destination_rows(setup, _partition(setup)) == 0
    blocker.rollback()
    blocker.close()

    assert master.wait_exit(30) == 0
    assert _destination_rows(setup, _partition(setup)) == 500
    assert _completed_tick(setup, "alpha") == tick
    (last_tick,) = setup.src_query(
        "select last_tick from pgq.get_consumer_info(%s, %s)",
        (setup.queue, "alpha"))[0]
    assert last_tick == tick
    assert "exited: worker pid" in master.log()
    assert "exit code 0 (stopping -> stopped)" in master.log()


def test_graceful_timeout_rolls_back_open_batch(setup, jobs_dir, tmp_path, masters):
    setup.table(ITEM_DDL, "public.item")
    setup.job_file("alpha")
    master = masters(jobs_dir, tmp_path, graceful_timeout=2)
    blocker, tick = _start_blocked_batch(setup, master, 300)

    master.send_signal(signal.SIGTERM)
    assert master.wait_exit(30) == 0
    assert "still runs 2 s after the stop request" in master.log()
    blocker.rollback()
    blocker.close()

    # The killed worker's transaction rolls back once its server process
    # gets past the lock and finds the client gone.
    wait_for(lambda: _worker_sessions(setup) == 0, 30,
             "the killed worker's session to end")
    assert _destination_rows(setup, _partition(setup)) == 0
    assert _completed_tick(setup, "alpha") != tick

    again_dir = tmp_path / "again"
    again_dir.mkdir()
    again = masters(jobs_dir, again_dir, graceful_timeout=10)
    again.wait_job("alpha", lambda job: job["totals"]["batches"] >= 1, "a batch")
    assert _destination_rows(setup, _partition(setup)) == 300
    assert _completed_tick(setup, "alpha") == tick


def _worker_sessions(setup):
    return setup.dst_query("select count(*) from pg_stat_activity where datname = %s"
                           " and application_name = 'cubemux'", (setup.dst_name,))[0][0]


def test_twenty_jobs_start_run_stop(setup, jobs_dir, tmp_path, masters):
    setup.table(ITEM_DDL, "public.item",
                dst_ddl="create table public.item (id int, name text)")
    names = ["job%02d" % number for number in range(20)]
    for name in names:
        setup.job_file(name, mode="keep_all")
    started = time.monotonic()
    master = masters(jobs_dir, tmp_path, graceful_timeout=30)
    pids = master.wait_running(*names, timeout=120)
    assert len(set(pids.values())) == 20
    assert set(pids.values()) == master.worker_pids()

    setup.src_exec("insert into item select i, 'n' || i from generate_series(1, 10) i")
    tick = setup.tick()
    wait_for(lambda: all(_completed_tick(setup, name) == tick for name in names), 120,
             "every job to apply the batch")
    assert _destination_rows(setup, _partition(setup)) == 200

    master.send_signal(signal.SIGTERM)
    assert master.wait_exit(60) == 0
    for pid in pids.values():
        assert not process_alive(pid)
    assert master.log().count("exit code 0 (stopping -> stopped)") == 20
    print("twenty jobs: started, ran and stopped in %.1f s"
          % (time.monotonic() - started))


def test_killed_master_leaves_no_worker(setup, jobs_dir, tmp_path, masters):
    for name in ("alpha", "beta", "gamma"):
        setup.job_file(name)
    master = masters(jobs_dir, tmp_path)
    pids = set(master.wait_running("alpha", "beta", "gamma").values())
    assert children_of(master.pid) == pids

    master.process.kill()
    master.process.wait(10)
    wait_for(lambda: not any(process_alive(pid) for pid in pids), 15,
             "every worker to exit after the master died")


def test_status_shows_backoff_reason(setup, jobs_dir, tmp_path, masters):
    broken = setup.dst_dsn.replace("dbname=", "password=s3cret dbname=missing_")
    setup.job_file("alpha", dst_db=broken)
    setup.job_file("beta")
    master = masters(jobs_dir, tmp_path)
    master.wait_running("beta")

    job = master.wait_job("alpha", lambda job: job["state"] == "backoff",
                          "backoff after the failed connection")
    assert "database error" in job["message"]
    assert "does not exist" in job["message"]
    assert "s3cret" not in job["message"]

    table = run_cubemux("status", "--control-socket", master.socket)
    assert table.returncode == 0, table.stderr
    row = [line for line in table.stdout.splitlines() if line.startswith("alpha")]
    assert len(row) == 1
    assert "does not exist" in row[0]
