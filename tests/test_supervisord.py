"""The master under a real supervisord, with a private config and socket.

The program section comes from deploy/supervisord.conf when that file has
one. Its paths are adapted in a copy: the command runs this checkout's
cubemux on a temporary job folder, without the user switch, and the log
goes to the test's folder. supervisord and supervisorctl come from the
Debian package (/usr/bin), as on a host.
"""

import configparser
import os
import shlex
import subprocess
import sys

import pytest

from cubemux.control import ControlError, send_request
from masterproc import ROOT, process_alive, wait_for

SUPERVISORD = "/usr/bin/supervisord"
SUPERVISORCTL = "/usr/bin/supervisorctl"
DEPLOY_CONF = os.path.join(ROOT, "deploy", "supervisord.conf")

# Used when deploy/supervisord.conf has no program section.
DEFAULT_PROGRAM = {
    "command": "cubemux start /etc/cubemux/jobs.d",
    "autostart": "true",
    "autorestart": "true",
    "startsecs": "5",
    "stopsignal": "TERM",
    "stopwaitsecs": "60",
    "killasgroup": "true",
    "redirect_stderr": "true",
}

pytestmark = pytest.mark.skipif(not os.path.exists(SUPERVISORD),
                                reason="supervisord is not installed")


def program_section():
    """Return (name, options) of the cubemux program section to run."""
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    if os.path.exists(DEPLOY_CONF):
        parser.read(DEPLOY_CONF)
        for section in parser.sections():
            if section.startswith("program:"):
                return section.split(":", 1)[1], dict(parser.items(section))
    return "cubemux", dict(DEFAULT_PROGRAM)


def adapt_command(command, jobs_dir, socket_path):
    """Run COMMAND's cubemux start with this checkout on JOBS_DIR."""
    argv = shlex.split(command)
    start = argv.index("start")
    options = argv[start + 2:]
    if "--metrics-port" in options:
        # Any free port, so that parallel runs do not collide.
        options[options.index("--metrics-port") + 1] = "0"
    argv = [sys.executable, "-m", "cubemux", "start", str(jobs_dir), *options,
            "--control-socket", str(socket_path), "--graceful-timeout", "10"]
    return " ".join(shlex.quote(arg) for arg in argv)


def write_config(work_dir, jobs_dir, socket_path):
    name, options = program_section()
    options["command"] = adapt_command(options["command"], jobs_dir, socket_path)
    options.pop("user", None)
    options["directory"] = ROOT
    options["environment"] = 'PYTHONPATH="%s"' % ROOT
    options["stdout_logfile"] = str(work_dir / "cubemux.log")
    options.pop("stdout_logfile_maxbytes", None)
    options.pop("stdout_logfile_backups", None)
    lines = [
        "[unix_http_server]",
        "file=%s" % (work_dir / "supervisor.sock"),
        "chmod=0700",
        "",
        "[supervisord]",
        "logfile=%s" % (work_dir / "supervisord.log"),
        "pidfile=%s" % (work_dir / "supervisord.pid"),
        "childlogdir=%s" % work_dir,
        "nodaemon=true",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = "
        "supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        "serverurl=unix://%s" % (work_dir / "supervisor.sock"),
        "",
        "[program:%s]" % name,
    ]
    lines.extend("%s=%s" % item for item in options.items())
    path = work_dir / "supervisord.conf"
    path.write_text("\n".join(lines) + "\n")
    return name, str(path)


class Supervisor:
    def __init__(self, config_path, program, work_dir, socket_path):
        self.config_path = config_path
        self.program = program
        self.work_dir = work_dir
        self.socket_path = str(socket_path)
        self.process = subprocess.Popen(
            [SUPERVISORD, "-n", "-c", config_path], cwd=str(work_dir),
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def ctl(self, *args, timeout=120):
        return subprocess.run([SUPERVISORCTL, "-c", self.config_path, *args],
                              capture_output=True, text=True, timeout=timeout)

    def program_state(self):
        result = self.ctl("status", self.program)
        fields = result.stdout.split()
        return fields[1] if len(fields) > 1 else None

    def master_pid(self):
        result = self.ctl("pid", self.program)
        return int(result.stdout.strip() or 0)

    def jobs(self):
        try:
            response = send_request(self.socket_path, {"command": "status"})
        except ControlError:
            return {}
        return {job["name"]: job for job in response["jobs"]}

    def wait_jobs_running(self, *names):
        def running():
            jobs = self.jobs()
            if all(jobs.get(name, {}).get("state") == "running" for name in names):
                return {name: jobs[name]["pid"] for name in names}
            return None
        return wait_for(running, 60, lambda: "jobs %s running\n%s"
                        % (", ".join(names), self.log()[-3000:]))

    def log(self):
        path = self.work_dir / "cubemux.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def supervisord_log(self):
        path = self.work_dir / "supervisord.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def supervisor(setup, tmp_path):
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    setup.tmp_path = jobs_dir
    setup.job_file("alpha")
    setup.job_file("beta")
    socket_path = tmp_path / "control.sock"
    program, config_path = write_config(tmp_path, jobs_dir, socket_path)
    instance = Supervisor(config_path, program, tmp_path, socket_path)
    yield instance
    instance.close()


def test_supervisord_start_restart_stop(supervisor):
    wait_for(lambda: supervisor.program_state() == "RUNNING", 60,
             lambda: "supervisord to start the master\n%s\n%s"
             % (supervisor.supervisord_log(), supervisor.log()[-3000:]))
    first_master = supervisor.master_pid()
    first_workers = supervisor.wait_jobs_running("alpha", "beta")

    restart = supervisor.ctl("restart", supervisor.program)
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert supervisor.program_state() == "RUNNING"
    second_master = supervisor.master_pid()
    assert second_master != first_master
    second_workers = supervisor.wait_jobs_running("alpha", "beta")
    for name in ("alpha", "beta"):
        assert second_workers[name] != first_workers[name]
        assert not process_alive(first_workers[name])

    stop = supervisor.ctl("stop", supervisor.program)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert supervisor.program_state() == "STOPPED"
    for pid in second_workers.values():
        assert not process_alive(pid)
    assert not process_alive(second_master)

    log = supervisor.log()
    assert log.count("stopping: SIGTERM received") == 2
    assert log.count("stopped master pid") == 2
    assert "killing:" not in log
    assert log.count("exit code 0 (stopping -> stopped)") == 4
    assert "stopped: %s (exit status 0)" % supervisor.program \
        in supervisor.supervisord_log()
