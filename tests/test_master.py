"""The master's supervision logic, driven by a fake SystemAPI.

No process is forked: the fake's fork() returns made-up pids, kill() records
signals, waitpid() returns the exits that a test queues, and poll() moves
the fake clock forward by its timeout. Reports reach a JobSlot through
handle_report(), as the loop would pass them on.
"""

import logging
import os
import signal

import pytest

from cubemux import states
from cubemux.errors import EXIT_CONFIG, EXIT_CRASH, EXIT_LOST_POSITION, EXIT_OK
from cubemux.jobs import JobStatus
from cubemux.master import Master


class FakeSystem:
    """fork, kill, waitpid, the clock and poll, without processes."""

    def __init__(self):
        self.now = 1000.0
        self.next_pid = 100
        self.alive = set()
        self.exits = []
        self.signals = []
        self.fork_error = None
        self.fork_times = []

    def fork(self):
        if self.fork_error is not None:
            raise self.fork_error
        self.next_pid += 1
        self.alive.add(self.next_pid)
        self.fork_times.append(self.now)
        return self.next_pid

    def kill(self, pid, signum):
        if pid not in self.alive:
            raise ProcessLookupError(pid)
        self.signals.append((pid, signum))

    def waitpid(self, pid, options):
        assert pid == -1
        assert options == os.WNOHANG
        if self.exits:
            exited, status = self.exits.pop(0)
            self.alive.discard(exited)
            return exited, status
        if not self.alive:
            raise ChildProcessError()
        return 0, 0

    def monotonic(self):
        return self.now

    def poll(self, fds, timeout):
        self.now += timeout
        return []

    # Test controls.

    def exit(self, pid, code):
        self.exits.append((pid, code << 8))

    def kill_by(self, pid, signum):
        self.exits.append((pid, signum))

    def signals_to(self, pid):
        return [signum for target, signum in self.signals if target == pid]


def write_job(directory, name, **settings):
    values = {"src_db": "dbname=src", "dst_db": "dbname=dst",
              "pgq_queue_name": "q_" + name, "worker_timeout": "10",
              "max_backoff": "60"}
    values.update(settings)
    lines = ["[cube_dispatcher]"] + ["%s = %s" % item for item in values.items()]
    path = directory / ("%s.ini" % name)
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def system():
    return FakeSystem()


@pytest.fixture
def jobs_dir(tmp_path):
    directory = tmp_path / "jobs"
    directory.mkdir()
    return directory


@pytest.fixture
def master(jobs_dir, system, caplog):
    """A started Master on the fake system; stopped and checked afterwards."""
    caplog.set_level(logging.INFO)
    instances = []

    def start(graceful_timeout=30.0):
        instance = Master(str(jobs_dir), graceful_timeout=graceful_timeout,
                          system=system)
        instance.start()
        instances.append(instance)
        return instance

    yield start
    for instance in instances:
        instance.halt()
    unexpected = [record.getMessage() for record in caplog.records
                  if "unexpected transition" in record.getMessage()]
    assert unexpected == []


def slot_named(master, name):
    (slot,) = [slot for slot in master.slots.values() if slot.name == name]
    return slot


def run_for(master, system, seconds):
    """Run loop passes until SECONDS of fake time have passed."""
    end = system.now + seconds
    while system.now < end:
        assert master.run_once()


def report_started(system, slot):
    slot.handle_report({"kind": "started"}, system.now)


# Start-up and job files.


def test_start_spawns_one_worker_per_job(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    write_job(jobs_dir, "beta")
    (jobs_dir / "alpha.ini~").write_text("leftover")
    (jobs_dir / ".alpha.ini.swp").write_text("swap")
    (jobs_dir / ".hidden.ini").write_text("[cube_dispatcher]\n")
    instance = master()

    assert sorted(slot.name for slot in instance.slots.values()) == ["alpha", "beta"]
    for slot in instance.slots.values():
        assert slot.state == states.STARTING
        assert slot.pid in system.alive


def test_started_report_makes_job_running(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    instance = master()
    slot = slot_named(instance, "alpha")
    report_started(system, slot)
    assert slot.state == states.RUNNING


def test_invalid_job_file_is_fatal(master, system, jobs_dir):
    write_job(jobs_dir, "broken", mode="keep_nothing")
    instance = master()
    slot = slot_named(instance, "broken")
    assert slot.state == states.FATAL
    assert slot.pid is None
    run_for(instance, system, 120)
    assert slot.state == states.FATAL
    assert system.next_pid == 100


def test_same_queue_and_consumer_second_file_rejected(master, system, jobs_dir):
    write_job(jobs_dir, "alpha", pgq_queue_name="shared", pgq_consumer_id="c")
    write_job(jobs_dir, "beta", pgq_queue_name="shared", pgq_consumer_id="c")
    instance = master()
    assert slot_named(instance, "alpha").state == states.STARTING
    assert slot_named(instance, "beta").state == states.FATAL
    assert len(system.alive) == 1


def test_shared_consumer_position_rejected(master, system, jobs_dir, caplog):
    write_job(jobs_dir, "alpha", pgq_queue_name="q1", pgq_consumer_id="c")
    write_job(jobs_dir, "beta", pgq_queue_name="q2", pgq_consumer_id="c")
    instance = master()
    assert slot_named(instance, "alpha").state == states.STARTING
    beta = slot_named(instance, "beta")
    assert beta.state == states.FATAL
    assert "keeps its position in this dst_db" in caplog.text
    assert len(system.alive) == 1


def test_new_file_cannot_take_running_consumer(master, system, jobs_dir):
    write_job(jobs_dir, "zulu", pgq_queue_name="shared", pgq_consumer_id="c")
    instance = master()
    zulu = slot_named(instance, "zulu")
    write_job(jobs_dir, "alpha", pgq_queue_name="shared", pgq_consumer_id="c")
    instance.reload()
    assert slot_named(instance, "alpha").state == states.FATAL
    assert zulu.state == states.STARTING
    assert len(system.alive) == 1


# Restart policy.


def test_crash_restarts_after_backoff(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    instance = master()
    slot = slot_named(instance, "alpha")
    first_pid = slot.pid

    crashed_at = system.now
    system.exit(first_pid, EXIT_CRASH)
    instance.reap()
    assert slot.state == states.BACKOFF
    assert slot.restarts == 1
    assert slot.pid is None

    run_for(instance, system, 1.5)
    assert slot.state == states.STARTING
    assert slot.pid != first_pid
    assert 1.0 <= system.fork_times[-1] - crashed_at <= 1.12


def test_backoff_doubles_up_to_cap(master, system, jobs_dir):
    write_job(jobs_dir, "alpha", max_backoff="5")
    instance = master()
    slot = slot_named(instance, "alpha")
    delays = []
    for _ in range(6):
        crashed_at = system.now
        system.exit(slot.pid, EXIT_CRASH)
        instance.run_once()
        while slot.state == states.BACKOFF:
            instance.run_once()
        delays.append(system.fork_times[-1] - crashed_at)
    bases = [1, 2, 4, 5, 5, 5]
    for delay, base in zip(delays, bases):
        assert base * 0.9 <= delay <= base * 1.1 + 0.02
    assert slot.restarts == 6


def test_backoff_resets_after_healthy_run(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    instance = master()
    slot = slot_named(instance, "alpha")
    for _ in range(3):
        system.exit(slot.pid, EXIT_CRASH)
        instance.run_once()
        while slot.state == states.BACKOFF:
            instance.run_once()
    assert slot.backoff.failures == 3

    report_started(system, slot)
    for _ in range(int(slot.healthy_after) + 2):
        slot.handle_report({"kind": "beat"}, system.now)
        run_for(instance, system, 1.0)
    system.exit(slot.pid, EXIT_CRASH)
    instance.run_once()
    assert slot.state == states.BACKOFF
    assert slot.backoff.failures == 1
    assert slot.next_start - system.now <= 1.1


def test_short_run_keeps_backoff_growing(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    instance = master()
    slot = slot_named(instance, "alpha")
    for _ in range(2):
        system.exit(slot.pid, EXIT_CRASH)
        instance.run_once()
        while slot.state == states.BACKOFF:
            instance.run_once()
    report_started(system, slot)
    run_for(instance, system, 5.0)
    slot.handle_report({"kind": "beat"}, system.now)
    system.exit(slot.pid, EXIT_CRASH)
    instance.run_once()
    assert slot.backoff.failures == 3


@pytest.mark.parametrize("code", [EXIT_CONFIG, EXIT_LOST_POSITION, 5])
def test_fatal_exit_code_waits_for_operator(master, system, jobs_dir, code):
    write_job(jobs_dir, "alpha")
    instance = master()
    slot = slot_named(instance, "alpha")
    system.exit(slot.pid, code)
    instance.run_once()
    assert slot.state == states.FATAL
    run_for(instance, system, 300)
    assert slot.state == states.FATAL
    assert slot.pid is None
    assert "cubemux restart alpha" in slot.message


def test_signal_death_restarts(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    instance = master()
    slot = slot_named(instance, "alpha")
    system.kill_by(slot.pid, signal.SIGSEGV)
    instance.run_once()
    assert slot.state == states.BACKOFF
    assert "killed by SIGSEGV" in slot.message


def test_unexpected_clean_exit_restarts(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    instance = master()
    slot = slot_named(instance, "alpha")
    system.exit(slot.pid, EXIT_OK)
    instance.run_once()
    assert slot.state == states.BACKOFF


def test_fork_failure_backs_off(master, system, jobs_dir):
    system.fork_error = BlockingIOError(11, "Resource temporarily unavailable")
    write_job(jobs_dir, "alpha")
    instance = master()
    slot = slot_named(instance, "alpha")
    assert slot.state == states.BACKOFF
    assert "failed to fork" in slot.message
    system.fork_error = None
    run_for(instance, system, 1.2)
    assert slot.state == states.STARTING


# Health.


def test_silent_worker_killed_after_worker_timeout(master, system, jobs_dir):
    write_job(jobs_dir, "alpha", worker_timeout="10")
    instance = master()
    slot = slot_named(instance, "alpha")
    report_started(system, slot)
    pid = slot.pid

    run_for(instance, system, 9.5)
    assert system.signals_to(pid) == []
    run_for(instance, system, 1.0)
    assert system.signals_to(pid) == [signal.SIGKILL]
    run_for(instance, system, 5.0)
    assert system.signals_to(pid) == [signal.SIGKILL]

    system.kill_by(pid, signal.SIGKILL)
    instance.run_once()
    assert slot.state == states.BACKOFF
    run_for(instance, system, 1.2)
    assert slot.state == states.STARTING
    assert slot.pid != pid


def test_beating_worker_is_not_killed(master, system, jobs_dir):
    write_job(jobs_dir, "alpha", worker_timeout="5")
    instance = master()
    slot = slot_named(instance, "alpha")
    report_started(system, slot)
    for _ in range(30):
        run_for(instance, system, 2.0)
        slot.handle_report({"kind": "beat", "batch_open_since": 1.0}, system.now)
    assert system.signals == []
    assert slot.state == states.RUNNING


# Stopping.


def test_graceful_stop_signals_workers_once(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    write_job(jobs_dir, "beta")
    instance = master()
    alpha = slot_named(instance, "alpha")
    beta = slot_named(instance, "beta")
    system.exit(beta.pid, EXIT_CRASH)
    instance.run_once()
    assert beta.state == states.BACKOFF

    instance.record_signal(signal.SIGTERM)
    instance.run_once()
    assert alpha.state == states.STOPPING
    assert beta.state == states.STOPPED
    assert system.signals_to(alpha.pid) == [signal.SIGTERM]
    instance.record_signal(signal.SIGTERM)
    run_for(instance, system, 5)
    assert system.signals_to(alpha.pid) == [signal.SIGTERM]
    assert beta.pid is None

    system.exit(alpha.pid, EXIT_OK)
    assert instance.run_once() is False
    assert alpha.state == states.STOPPED


def test_graceful_timeout_kills_worker(master, system, jobs_dir):
    write_job(jobs_dir, "alpha", worker_timeout="1000")
    instance = master(graceful_timeout=20)
    slot = slot_named(instance, "alpha")
    pid = slot.pid
    instance.record_signal(signal.SIGINT)
    run_for(instance, system, 19)
    assert system.signals_to(pid) == [signal.SIGTERM]
    run_for(instance, system, 2)
    assert system.signals_to(pid) == [signal.SIGTERM, signal.SIGKILL]
    system.kill_by(pid, signal.SIGKILL)
    assert instance.run_once() is False


def test_second_sigint_kills_at_once(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    write_job(jobs_dir, "beta")
    instance = master()
    pids = [slot.pid for slot in instance.slots.values()]
    instance.record_signal(signal.SIGINT)
    instance.run_once()
    instance.record_signal(signal.SIGINT)
    instance.run_once()
    for pid in pids:
        assert system.signals_to(pid) == [signal.SIGTERM, signal.SIGKILL]


def test_sighup_ignored_while_stopping(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    instance = master()
    pid = slot_named(instance, "alpha").pid
    instance.record_signal(signal.SIGTERM)
    instance.run_once()
    write_job(jobs_dir, "beta")
    instance.record_signal(signal.SIGHUP)
    instance.run_once()
    assert len(instance.slots) == 1
    system.exit(pid, EXIT_OK)
    assert instance.run_once() is False


def test_no_restart_while_stopping(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    instance = master()
    slot = slot_named(instance, "alpha")
    instance.record_signal(signal.SIGTERM)
    instance.run_once()
    system.exit(slot.pid, EXIT_CRASH)
    assert instance.run_once() is False
    assert slot.state == states.STOPPED
    assert slot.restarts == 0


# Reload.


def test_reload_adds_removes_changes_keeps(master, system, jobs_dir):
    for name in ("keep", "remove", "change", "broken"):
        write_job(jobs_dir, name)
    instance = master()
    pids = {slot.name: slot.pid for slot in instance.slots.values()}

    os.unlink(jobs_dir / "remove.ini")
    write_job(jobs_dir, "change", loop_delay="5")
    write_job(jobs_dir, "broken", mode="keep_nothing")
    write_job(jobs_dir, "added")
    instance.record_signal(signal.SIGHUP)
    instance.run_once()

    assert system.signals_to(pids["keep"]) == []
    assert system.signals_to(pids["broken"]) == []
    assert system.signals_to(pids["remove"]) == [signal.SIGTERM]
    assert system.signals_to(pids["change"]) == [signal.SIGTERM]
    assert slot_named(instance, "added").state == states.STARTING
    assert slot_named(instance, "broken").state == states.STARTING
    assert slot_named(instance, "broken").job.mode == "keep_latest"
    change = slot_named(instance, "change")
    assert change.state == states.STOPPING

    system.exit(pids["remove"], EXIT_OK)
    system.exit(pids["change"], EXIT_OK)
    instance.run_once()
    assert "remove" not in [slot.name for slot in instance.slots.values()]
    assert change.state == states.STARTING
    assert change.pid not in pids.values()
    assert change.job.loop_delay == 5.0
    assert change.restarts == 0


def test_reload_starts_fixed_invalid_job(master, system, jobs_dir):
    write_job(jobs_dir, "alpha", mode="keep_nothing")
    instance = master()
    slot = slot_named(instance, "alpha")
    assert slot.state == states.FATAL
    write_job(jobs_dir, "alpha")
    instance.reload()
    assert slot.state == states.STARTING


def test_reload_restarts_changed_job_in_backoff_now(master, system, jobs_dir):
    write_job(jobs_dir, "alpha", max_backoff="60")
    instance = master()
    slot = slot_named(instance, "alpha")
    for _ in range(4):
        system.exit(slot.pid, EXIT_CRASH)
        instance.run_once()
        while slot.state == states.BACKOFF:
            instance.run_once()
    system.exit(slot.pid, EXIT_CRASH)
    instance.run_once()
    assert slot.state == states.BACKOFF
    write_job(jobs_dir, "alpha", max_backoff="30")
    instance.reload()
    assert slot.state == states.STARTING
    assert slot.backoff.failures == 0
    assert slot.backoff.cap == 30


def test_reload_unchanged_fatal_job_stays_fatal(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    instance = master()
    slot = slot_named(instance, "alpha")
    system.exit(slot.pid, EXIT_LOST_POSITION)
    instance.run_once()
    instance.reload()
    assert slot.state == states.FATAL


def test_changed_consumer_waits_for_old_worker(master, system, jobs_dir):
    write_job(jobs_dir, "alpha", pgq_queue_name="shared", pgq_consumer_id="a")
    write_job(jobs_dir, "beta", pgq_queue_name="shared", pgq_consumer_id="b")
    instance = master()
    alpha = slot_named(instance, "alpha")
    beta = slot_named(instance, "beta")
    alpha_pid = alpha.pid

    # Swap the consumers: beta must not start as "a" while alpha's worker runs.
    write_job(jobs_dir, "alpha", pgq_queue_name="shared", pgq_consumer_id="b")
    write_job(jobs_dir, "beta", pgq_queue_name="shared", pgq_consumer_id="a")
    instance.reload()
    system.exit(beta.pid, EXIT_OK)
    instance.run_once()
    assert beta.state == states.BACKOFF
    assert beta.pid is None
    assert "waiting" in beta.message

    system.exit(alpha_pid, EXIT_OK)
    run_for(instance, system, 0.5)
    assert alpha.state == states.STARTING
    assert beta.state == states.STARTING


# Requests from the control socket.


def test_restart_request_restarts_running_job(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    write_job(jobs_dir, "beta")
    instance = master()
    alpha = slot_named(instance, "alpha")
    beta = slot_named(instance, "beta")
    old_pid = alpha.pid

    future = instance.submit("restart", job="alpha")
    instance.run_once()
    assert future.result(0)["ok"]
    assert alpha.state == states.STOPPING
    system.exit(old_pid, EXIT_OK)
    instance.run_once()
    assert alpha.state == states.STARTING
    assert alpha.pid != old_pid
    assert system.signals_to(beta.pid) == []


def test_restart_request_starts_fatal_job(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    instance = master()
    slot = slot_named(instance, "alpha")
    system.exit(slot.pid, EXIT_LOST_POSITION)
    instance.run_once()
    future = instance.submit("restart", job="alpha.ini")
    instance.run_once()
    response = future.result(0)
    assert response["ok"], response
    assert slot.state == states.STARTING


def test_restart_request_unknown_job(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    instance = master()
    future = instance.submit("restart", job="nosuchjob")
    instance.run_once()
    response = future.result(0)
    assert response["ok"] is False
    assert "not found" in response["error"]


def test_restart_request_invalid_file(master, system, jobs_dir):
    write_job(jobs_dir, "alpha", mode="keep_nothing")
    instance = master()
    future = instance.submit("restart", job="alpha")
    instance.run_once()
    response = future.result(0)
    assert response["ok"] is False
    assert "mode" in response["error"]
    assert slot_named(instance, "alpha").state == states.FATAL


def test_snapshot_published_each_pass(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    instance = master()
    slot = slot_named(instance, "alpha")
    report_started(system, slot)
    slot.handle_report({"kind": "queue", "consumer_lag_seconds": 2.5,
                        "pending_events": 7}, system.now)
    slot.handle_report({"kind": "batch", "time": 1.0e9, "seconds": 0.1,
                        "events": {"I": 2}, "inserted": {"public.t": 2}}, system.now)
    instance.run_once()

    (status,) = instance.snapshot
    assert isinstance(status, JobStatus)
    assert status.name == "alpha"
    assert status.state == states.RUNNING
    assert status.pid == slot.pid
    assert status.restarts == 0
    assert status.last_batch_time == 1.0e9
    assert status.queue_figures["consumer_lag_seconds"] == 2.5
    assert status.totals["batches"] == 1
    assert status.totals["inserted"] == {"public.t": 2}
    with pytest.raises(AttributeError):
        status.state = states.FATAL

    slot.handle_report({"kind": "batch", "time": 2.0e9, "inserted": {"public.t": 1}},
                       system.now)
    assert status.totals["inserted"] == {"public.t": 2}
    instance.run_once()
    assert instance.snapshot[0].totals["inserted"] == {"public.t": 3}


def test_status_response_lists_jobs(master, system, jobs_dir):
    write_job(jobs_dir, "alpha")
    instance = master()
    response = instance.handle_control_request({"command": "status"})
    assert response["ok"]
    assert response["master"]["stopping"] is False
    assert [job["name"] for job in response["jobs"]] == ["alpha"]
    assert response["jobs"][0]["state"] == states.STARTING
