"""Daemon mode, pidfiles and the signal switches, with real processes.

A daemon is not a child of the test, so the tests find it through its
pidfile and its workers through /proc, and kill only those pids.
"""

import os
import signal
import subprocess

import pytest

from cubemux.control import send_request
from cubemux.pidfile import NotRunning, PidFile, live_pid, read_pid
from masterproc import children_of, process_alive, run_cubemux, wait_for


@pytest.fixture
def jobs_dir(setup, tmp_path):
    directory = tmp_path / "jobs"
    directory.mkdir()
    setup.tmp_path = directory
    return directory


@pytest.fixture
def daemons():
    """Record the pidfiles of daemons; kill what still runs afterwards."""
    pidfiles = []
    yield pidfiles
    for path in pidfiles:
        try:
            pid = live_pid(path)
        except NotRunning:
            continue
        workers = children_of(pid)
        os.kill(pid, signal.SIGKILL)
        for worker in workers:
            if process_alive(worker):
                os.kill(worker, signal.SIGKILL)


def dead_pid():
    """Return the pid of a process that has exited and been reaped."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def status_jobs(pidfile):
    socket_path = os.path.splitext(pidfile)[0] + ".sock"
    response = send_request(socket_path, {"command": "status"})
    return {job["name"]: job for job in response["jobs"]}


def wait_daemon_running(pidfile, *names):
    def running():
        jobs = status_jobs(pidfile)
        return all(jobs.get(name, {}).get("state") == "running" for name in names)
    wait_for(running, 60, "jobs %s running" % ", ".join(names))


def read_log(path):
    with open(path, errors="replace") as handle:
        return handle.read()


def test_daemon_master_lifecycle(setup, jobs_dir, tmp_path, daemons):
    setup.job_file("alpha")
    pidfile = str(tmp_path / "run" / "cubemux.pid")
    os.mkdir(tmp_path / "run")
    logfile = str(tmp_path / "master.log")
    daemons.append(pidfile)

    result = run_cubemux("start", jobs_dir, "-d", "--pidfile", pidfile,
                         "--logfile", logfile, "--graceful-timeout", "10")
    assert result.returncode == 0, result.stderr
    pid = live_pid(pidfile)
    assert pid != os.getpid()
    assert process_alive(pid)
    wait_daemon_running(pidfile, "alpha")
    worker = status_jobs(pidfile)["alpha"]["pid"]
    assert children_of(pid) == {worker}

    # A second master on the same pidfile fails on the terminal.
    second = run_cubemux("start", jobs_dir, "-d", "--pidfile", pidfile)
    assert second.returncode == 2
    assert "another process (pid %d) is running with this pidfile" % pid \
        in second.stderr
    assert live_pid(pidfile) == pid

    # status finds the socket next to the pidfile.
    status = run_cubemux("status", "--pidfile", pidfile)
    assert status.returncode == 0, status.stderr
    assert "alpha" in status.stdout

    setup.job_file("beta")
    reload = run_cubemux("reload", "--pidfile", pidfile)
    assert reload.returncode == 0, reload.stderr
    assert "sent SIGHUP to pid %d" % pid in reload.stdout
    wait_daemon_running(pidfile, "alpha", "beta")

    stop = run_cubemux("stop", "--pidfile", pidfile, "--wait", "30")
    assert stop.returncode == 0, stop.stderr
    assert "pid %d has exited" % pid in stop.stdout
    assert not os.path.exists(pidfile)
    assert not os.path.exists(os.path.splitext(pidfile)[0] + ".sock")
    wait_for(lambda: not process_alive(worker), 10, "the worker to exit")
    log = read_log(logfile)
    assert "stopping: SIGINT received" in log
    assert "stopped master pid %d" % pid in log


def test_original_switches_on_start(setup, jobs_dir, tmp_path, daemons):
    setup.job_file("alpha")
    pidfile = str(tmp_path / "master.pid")
    logfile = str(tmp_path / "master.log")
    daemons.append(pidfile)
    assert run_cubemux("start", jobs_dir, "-d", "--pidfile", pidfile,
                       "--logfile", logfile).returncode == 0
    pid = live_pid(pidfile)
    wait_daemon_running(pidfile, "alpha")

    reload = run_cubemux("start", jobs_dir, "-r", "--pidfile", pidfile)
    assert reload.returncode == 0, reload.stderr
    wait_for(lambda: "reloading: scanning" in read_log(logfile), 10, "a reload")

    kill = run_cubemux("start", jobs_dir, "-k", "--pidfile", pidfile)
    assert kill.returncode == 0, kill.stderr
    assert "sent SIGTERM to pid %d" % pid in kill.stdout
    wait_for(lambda: not process_alive(pid), 30, "the master to exit")
    assert "stopping: SIGTERM received" in read_log(logfile)
    assert not os.path.exists(pidfile)


def test_stale_pidfile_replaced(setup, jobs_dir, tmp_path, daemons):
    setup.job_file("alpha")
    pidfile = str(tmp_path / "master.pid")
    stale = dead_pid()
    with open(pidfile, "w") as handle:
        handle.write("%d\n" % stale)
    daemons.append(pidfile)

    stop = run_cubemux("stop", "--pidfile", pidfile)
    assert stop.returncode == 1
    assert "stale pidfile: process %d is not running" % stale in stop.stderr

    result = run_cubemux("start", jobs_dir, "-d", "--pidfile", pidfile,
                         "--logfile", tmp_path / "master.log")
    assert result.returncode == 0, result.stderr
    pid = live_pid(pidfile)
    assert pid != stale
    wait_daemon_running(pidfile, "alpha")
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not process_alive(pid), 30, "the master to exit")


def test_daemon_needs_pidfile(jobs_dir):
    result = run_cubemux("start", jobs_dir, "-d")
    assert result.returncode == 2
    assert "-d needs a pidfile: give --pidfile FILE" in result.stderr


def test_switch_needs_pidfile(jobs_dir):
    result = run_cubemux("start", jobs_dir, "-s")
    assert result.returncode == 2
    assert "-s needs the master's --pidfile FILE" in result.stderr


def test_missing_job_folder(tmp_path):
    result = run_cubemux("start", tmp_path / "nowhere")
    assert result.returncode == 3
    assert "job folder not found" in result.stderr


def test_run_job_daemon_and_switches(setup, jobs_dir, tmp_path, daemons):
    setup.table("create table public.item (id int primary key, name text)",
                "public.item")
    pidfile = str(tmp_path / "alpha.pid")
    logfile = str(tmp_path / "alpha.log")
    path = setup.job_file("alpha", pidfile=pidfile, logfile=logfile)
    daemons.append(pidfile)

    result = run_cubemux("run", path, "-d")
    assert result.returncode == 0, result.stderr
    pid = live_pid(pidfile)
    wait_for(lambda: "started: queue testq" in read_log(logfile), 30, "the job")

    second = run_cubemux("run", path)
    assert second.returncode == 2
    assert "is running with this pidfile" in second.stderr

    setup.src_exec("insert into item values (1, 'a')")
    setup.tick()
    wait_for(lambda: "applied batch" in read_log(logfile), 30, "a batch")

    reload = run_cubemux("run", path, "-r")
    assert reload.returncode == 0, reload.stderr
    wait_for(lambda: "reloaded: the job file is unchanged" in read_log(logfile), 10,
             "the reload")
    assert process_alive(pid)

    stop = run_cubemux("run", path, "-s")
    assert stop.returncode == 0, stop.stderr
    assert "sent SIGINT to pid %d" % pid in stop.stdout
    wait_for(lambda: not process_alive(pid), 30, "the job to exit")
    assert not os.path.exists(pidfile)
    assert "stopped consumer alpha on queue testq" in read_log(logfile)


def test_run_switch_needs_pidfile_key(setup, jobs_dir):
    path = setup.job_file("alpha")
    result = run_cubemux("run", path, "-s")
    assert result.returncode == 2
    assert "-s needs a pidfile: set pidfile in [cube_dispatcher]" in result.stderr


def test_pidfile_lock_outlives_reader(tmp_path):
    path = str(tmp_path / "x.pid")
    owner = PidFile(path)
    owner.acquire()
    try:
        assert read_pid(path) == os.getpid()
        assert live_pid(path) == os.getpid()
        assert live_pid(path) == os.getpid()
    finally:
        owner.release()
    assert not os.path.exists(path)
    with pytest.raises(NotRunning, match="pidfile not found"):
        live_pid(path)
