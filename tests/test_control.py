"""The control socket and the status and restart commands, on a real master."""

import json
import os
import signal
import socket
import stat

import pytest

from cubemux.control import ControlError, ControlServer, SocketInUse, send_request
from cubemux.service import format_age, format_status
from masterproc import MasterProcess, run_cubemux, wait_for


@pytest.fixture
def jobs_dir(setup, tmp_path):
    directory = tmp_path / "jobs"
    directory.mkdir()
    setup.tmp_path = directory
    return directory


@pytest.fixture
def master(setup, jobs_dir, tmp_path):
    setup.job_file("alpha")
    setup.job_file("beta")
    setup.job_file("broken", mode="keep_nothing")
    process = MasterProcess(jobs_dir, tmp_path).start()
    process.wait_running("alpha", "beta")
    yield process
    process.close()


def test_status_prints_table(master):
    result = run_cubemux("status", "--control-socket", master.socket)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("master pid %d, up " % master.pid)
    assert lines[1].split() == ["JOB", "STATE", "PID", "UPTIME", "RESTARTS", "LAST",
                                "BATCH", "LAG", "INFO"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert sorted(rows) == ["alpha", "beta", "broken"]
    assert rows["alpha"][1] == "running"
    assert rows["alpha"][2] == str(master.job("alpha")["pid"])
    assert rows["alpha"][4] == "0"
    assert rows["broken"][1] == "fatal"
    assert rows["broken"][2] == "-"
    assert "rejected: the job file is invalid" in result.stdout


def test_status_json_for_scripts(master):
    result = run_cubemux("status", "--control-socket", master.socket, "--json")
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["ok"] is True
    assert response["master"]["pid"] == master.pid
    jobs = {job["name"]: job for job in response["jobs"]}
    assert jobs["alpha"]["state"] == "running"
    assert jobs["beta"]["pid"] > 0
    assert jobs["broken"]["state"] == "fatal"
    assert "password" not in result.stdout


def test_restart_command_restarts_one_job(master):
    before = {name: job["pid"] for name, job in master.jobs().items()}
    result = run_cubemux("restart", "alpha", "--control-socket", master.socket)
    assert result.returncode == 0, result.stderr
    assert "stopping worker pid %d" % before["alpha"] in result.stdout
    job = master.wait_job("alpha", lambda job: job["state"] == "running"
                          and job["pid"] != before["alpha"], "a new worker")
    assert job["restarts"] == 0
    assert master.job("beta")["pid"] == before["beta"]


def test_restart_command_starts_fixed_fatal_job(master, setup):
    setup.job_file("broken")
    result = run_cubemux("restart", "broken", "--control-socket", master.socket)
    assert result.returncode == 0, result.stderr
    assert "started worker pid" in result.stdout
    master.wait_running("broken")


def test_restart_command_unknown_job(master):
    result = run_cubemux("restart", "nosuchjob", "--control-socket", master.socket)
    assert result.returncode == 1
    assert "job 'nosuchjob' not found" in result.stderr


def test_status_without_master_fails(tmp_path):
    result = run_cubemux("status", "--control-socket", tmp_path / "none.sock")
    assert result.returncode == 1
    assert "no master is listening on the control socket" in result.stderr


def test_control_socket_owner_only(master):
    mode = stat.S_IMODE(os.stat(master.socket).st_mode)
    assert mode == 0o600


def test_second_master_on_socket_rejected(master, jobs_dir, tmp_path):
    result = run_cubemux("start", jobs_dir, "--control-socket", master.socket)
    assert result.returncode == 2
    assert "another master listens on the control socket" in result.stderr
    assert master.try_status() is not None


def test_default_socket_shared_by_two_masters(setup, jobs_dir, tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    default_path = str(runtime / "cubemux" / "cubemux.sock")
    setup.job_file("alpha")
    other_jobs = tmp_path / "other"
    other_jobs.mkdir()
    first_dir = tmp_path / "first"
    second_dir = tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()

    first = MasterProcess(jobs_dir, first_dir, socket=default_path,
                          pass_socket=False, env=env)
    second = MasterProcess(other_jobs, second_dir, socket=default_path,
                           pass_socket=False, env=env)
    try:
        first.start()
        first.wait_running("alpha")
        second.start(wait=False)
        wait_for(lambda: "running without control socket" in second.log(), 30,
                 "the second master's warning\n" + second.log())
        assert second.process.poll() is None

        result = run_cubemux("status", env=env)
        assert result.returncode == 0, result.stderr
        assert "master pid %d," % first.pid in result.stdout
        assert "alpha" in result.stdout
    finally:
        second.close()
        first.close()


def test_stale_socket_replaced(tmp_path):
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()
    server = ControlServer(path)
    try:
        server.serve(lambda request: {"ok": True, "echo": request["command"]})
        assert send_request(path, {"command": "status"}) == {"ok": True,
                                                             "echo": "status"}
        with pytest.raises(SocketInUse):
            ControlServer(path)
    finally:
        server.close()
    assert not os.path.exists(path)


def test_socket_path_not_a_socket_rejected(tmp_path):
    path = tmp_path / "file.sock"
    path.write_text("")
    with pytest.raises(ControlError, match="is not a socket"):
        ControlServer(str(path))


def test_invalid_request_gets_error(tmp_path):
    path = str(tmp_path / "c.sock")
    server = ControlServer(path)
    try:
        server.serve(lambda request: {"ok": True})
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        client.sendall(b"not json\n")
        response = json.loads(client.makefile().readline())
        client.close()
    finally:
        server.close()
    assert response["ok"] is False
    assert "invalid request" in response["error"]


def test_socket_removed_when_master_stops(master):
    master.send_signal(signal.SIGTERM)
    assert master.wait_exit(30) == 0
    assert not os.path.exists(master.socket)


def test_format_status_columns():
    now = 1_000_000.0
    response = {
        "master": {"pid": 10, "started_at": now - 3700, "directory": "/jobs",
                   "stopping": False},
        "jobs": [
            {"name": "alpha", "state": "running", "pid": 11, "started_at": now - 75,
             "restarts": 2, "last_batch_time": now - 4, "batch_open_since": None,
             "queue_figures": {"consumer_lag_seconds": 1.25}, "message": "",
             "standby": False},
            {"name": "beta", "state": "backoff", "pid": None, "started_at": None,
             "restarts": 5, "last_batch_time": None, "batch_open_since": None,
             "queue_figures": None, "message": "exited: worker pid 12, exit code 1",
             "standby": False},
        ],
    }
    lines = format_status(response, now).splitlines()
    assert lines[0] == "master pid 10, up 1h01m, 2 jobs in /jobs"
    assert lines[2].split() == ["alpha", "running", "11", "1m15s", "2", "4.0s", "1.2s"]
    assert lines[3].split()[:7] == ["beta", "backoff", "-", "-", "5", "-", "-"]
    assert lines[3].endswith("exited: worker pid 12, exit code 1")


@pytest.mark.parametrize("seconds, text", [
    (0.25, "0.2s"), (42, "42s"), (723, "12m03s"), (18420, "5h07m"),
    (273600, "3d04h"), (-5, "0.0s"),
])
def test_format_age(seconds, text):
    assert format_age(seconds) == text
