"""A real ``cubemux start`` process for tests, watched through its control socket."""

import os
import signal
import subprocess
import sys
import time

from cubemux.control import ControlError, send_request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_for(condition, timeout=30.0, what="the condition", interval=0.05):
    """Poll CONDITION until it returns a true value, and return that value.

    WHAT describes the condition in the failure message. A callable WHAT is
    called at the failure, so that it can show a log as it is by then.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s"
                                 % (timeout, what() if callable(what) else what))
        time.sleep(interval)


def process_alive(pid):
    """Return True while PID runs. A zombie counts as gone."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] not in ("Z", "X")


def children_of(pid):
    """Return the pids of PID's child processes, from /proc."""
    children = set()
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return children
    for task in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, task)) as handle:
                children.update(int(text) for text in handle.read().split())
        except FileNotFoundError:
            continue
    return children


def cubemux_command(*args):
    return [sys.executable, "-m", "cubemux", *[str(arg) for arg in args]]


def run_cubemux(*args, timeout=60, env=None):
    """Run a cubemux command to its end. Return the CompletedProcess."""
    return subprocess.run(cubemux_command(*args), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


class MasterProcess:
    """``cubemux start DIR`` in the foreground, with its log in a file.

    SOCKET is the control socket path to give with --control-socket, or,
    with PASS_SOCKET false, the default path that the master is expected to
    pick under ENV.
    """

    def __init__(self, directory, work_dir, graceful_timeout=10.0, extra_args=(),
                 socket=None, pass_socket=True, env=None):
        self.directory = str(directory)
        self.socket = socket or os.path.join(str(work_dir), "control.sock")
        self.pass_socket = pass_socket
        self.env = env
        self.log_path = os.path.join(str(work_dir), "master.log")
        self.graceful_timeout = graceful_timeout
        self.extra_args = list(extra_args)
        self.process = None

    @property
    def pid(self):
        return self.process.pid

    def start(self, wait=True):
        command = cubemux_command("start", self.directory, "--graceful-timeout",
                                  self.graceful_timeout, *self.extra_args)
        if self.pass_socket:
            command += ["--control-socket", self.socket]
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log_file,
                                            stderr=subprocess.STDOUT, env=self.env)
        if wait:
            wait_for(self.try_status,
                     what=lambda: "the master's control socket\n" + self.log())
        return self

    def log(self):
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def try_status(self):
        """Return the master's status response, or None while it cannot respond."""
        if self.process.poll() is not None:
            raise AssertionError("the master exited with code %s:\n%s"
                                 % (self.process.returncode, self.log()))
        try:
            return send_request(self.socket, {"command": "status"}, timeout=10)
        except ControlError:
            return None

    def jobs(self):
        response = wait_for(self.try_status, what="a status response")
        return {job["name"]: job for job in response["jobs"]}

    def job(self, name):
        return self.jobs()[name]

    def wait_job(self, name, condition, what, timeout=30.0):
        """Wait until CONDITION(job status dict) is true. Return the status."""
        def check():
            job = self.jobs().get(name)
            return job if job is not None and condition(job) else None
        return wait_for(check, timeout,
                        lambda: "job %s: %s\n%s" % (name, what, self.log()[-4000:]))

    def wait_running(self, *names, timeout=60.0):
        def running():
            jobs = self.jobs()
            return all(jobs.get(name, {}).get("state") == "running" for name in names)
        wait_for(running, timeout, lambda: "jobs %s running\n%s"
                 % (", ".join(names), self.log()[-4000:]))
        jobs = self.jobs()
        return {name: jobs[name]["pid"] for name in names}

    def restart(self, name):
        return send_request(self.socket, {"command": "restart", "job": name})

    def send_signal(self, signum):
        self.process.send_signal(signum)

    def wait_exit(self, timeout=60.0):
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("the master did not exit within %.0f s:\n%s"
                                 % (timeout, self.log()[-4000:])) from None

    def worker_pids(self):
        return children_of(self.process.pid)

    def close(self):
        """Stop the master if it still runs, and every worker it left."""
        if self.process is None or self.process.poll() is not None:
            return
        workers = self.worker_pids()
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in workers:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
