"""Metrics and health of the master: the collector alone, then real runs.

The real runs start ``cubemux start`` as a process with real workers on
private PostgreSQL clusters, scrape /metrics, parse it with
prometheus_client's parser and compare the counters with the destination.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psycopg2
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Setup
from cubemux import config, metrics, states
from cubemux.httpserver import start_server
from cubemux.jobs import JobSlot
from cubemux.master import Master

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A password in the job files' connection strings. Trust authentication
# ignores it, and it must never show in /metrics or /healthz.
PASSWORD = "hunter2-not-for-labels"

_SERVING = re.compile(r"serving metrics on (http://[^\s/]+)/metrics")


# Helpers.


def wait_for(condition, timeout=30.0, description="the condition"):
    """Poll CONDITION until it returns a true value, and return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s"
                                 % (timeout, description))
        time.sleep(0.1)


def http_get(url, accept=None):
    """Return (status, body text) of a GET request, for any status."""
    request = urllib.request.Request(url)
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def parse_samples(text):
    """Return {(sample name, sorted label pairs): value} of an exposition."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, "duplicate series %r" % (key,)
            samples[key] = sample.value
    return samples


def sample(samples, name, **labels):
    """Return the value of one series, or None when it is absent."""
    return samples.get((name, tuple(sorted(labels.items()))))


def write_job_file(path, **settings):
    lines = ["[cube_dispatcher]"]
    lines += ["%s = %s" % (key, value) for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


class MasterProcess:
    """``cubemux start DIR`` in a process of its own, serving on a free port."""

    def __init__(self, directory, log_path):
        self.directory = str(directory)
        self.log_path = str(log_path)
        self.process = None
        self.url = None

    def start(self):
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cubemux", "start", self.directory,
             "--metrics-host", "127.0.0.1", "--metrics-port", "0",
             "--graceful-timeout", "5"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.url = wait_for(self._served_url, 30, "the master to serve /metrics")
        return self

    def _served_url(self):
        if self.process.poll() is not None:
            raise AssertionError("the master exited with code %s:\n%s"
                                 % (self.process.returncode, self.log()))
        match = _SERVING.search(self.log())
        return match.group(1) if match else None

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def metrics_text(self):
        status, text = http_get(self.url + "/metrics")
        assert status == 200, text
        return text

    def scrape(self):
        return parse_samples(self.metrics_text())

    def health(self):
        status, text = http_get(self.url + "/healthz")
        return status, json.loads(text)

    def job_health(self, job):
        for entry in self.health()[1]["jobs"]:
            if entry["job"] == job:
                return entry
        return None

    def wait_running(self, *jobs):
        def running():
            entries = [self.job_health(job) for job in jobs]
            return all(entry and entry["state"] == states.RUNNING for entry in entries)
        wait_for(running, 60, "jobs %s to run" % ", ".join(jobs))

    def wait_value(self, name, expected, timeout=30, **labels):
        """Scrape until series NAME{LABELS} equals EXPECTED, and return the samples."""
        seen = []

        def reached():
            samples = self.scrape()
            seen[:] = [sample(samples, name, **labels)]
            return samples if seen[0] == expected else None
        try:
            return wait_for(reached, timeout, "%s%r == %r" % (name, labels, expected))
        except AssertionError as error:
            raise AssertionError("%s, last value %r; master log:\n%s"
                                 % (error, seen[0] if seen else None,
                                    self.log()[-4000:])) from None

    def worker_pid(self, job):
        """Return the pid of JOB's worker, checked to be a child of this master."""
        pid = self.job_health(job)["pid"]
        with open("/proc/%d/stat" % pid) as handle:
            parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        assert parent == self.process.pid, "pid %d is not a worker of the master" % pid
        return pid

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def jobs_dir(tmp_path):
    directory = tmp_path / "jobs"
    directory.mkdir()
    return directory


@pytest.fixture
def master_process(jobs_dir, tmp_path):
    process = MasterProcess(jobs_dir, tmp_path / "master.log")
    yield process
    process.stop()


def make_setup(src_cluster, dst_cluster, jobs_dir):
    return Setup(src_cluster, dst_cluster, jobs_dir)


def add_job(setup, name, **settings):
    """Write job file NAME for SETUP, with the password in both connection strings."""
    return setup.job_file(name, src_db="%s password=%s" % (setup.src_dsn, PASSWORD),
                          dst_db="%s password=%s" % (setup.dst_dsn, PASSWORD),
                          **settings)


def destination_rows(setup, table):
    """Count the rows of every partition of TABLE in the destination."""
    names = [row[0] for row in setup.dst_query(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public' and c.relkind = 'r' and c.relname like %s",
        (table + "\\_%",))]
    return sum(setup.dst_query('select count(*) from public."%s"' % name)[0][0]
               for name in names)


# The collector on its own.


class FakeMaster:
    """Publishes the snapshot of its slots, as Master.publish_snapshot() does."""

    def __init__(self, *slots):
        self.slots = {slot.path: slot for slot in slots}

    @property
    def snapshot(self):
        return tuple(slot.status(time.monotonic()) for slot in self.slots.values())


# The valid transitions from the initial state (stopped) into each state.
_PATHS = {
    states.STOPPED: (),
    states.STARTING: (states.STARTING,),
    states.RUNNING: (states.STARTING, states.RUNNING),
    states.STOPPING: (states.STARTING, states.STOPPING),
    states.BACKOFF: (states.BACKOFF,),
    states.FATAL: (states.FATAL,),
}


def load_slot(tmp_path, name, state=states.RUNNING, pid=100, **settings):
    """Return a JobSlot of a new job file, moved into STATE."""
    values = {"src_db": "dbname=src password=%s" % PASSWORD,
              "dst_db": "dbname=dst password=%s" % PASSWORD,
              "pgq_queue_name": "orders"}
    values.update(settings)
    path = write_job_file(tmp_path / ("%s.ini" % name), **values)
    slot = JobSlot(path, config.load_job(path))
    for step in _PATHS[state]:
        if step == states.STARTING:
            slot.worker_started(pid, None, time.monotonic())
            slot.change_state(states.STARTING, "spawned by the test")
        elif step == states.RUNNING:
            slot.handle_report({"kind": "started", "time": time.time()}, time.monotonic())
        else:
            slot.change_state(step, "moved by the test")
    assert slot.state == state
    return slot


def batch_report(seconds=0.2, **fields):
    report = {"kind": "batch", "time": time.time(), "seconds": seconds,
              "skipped": False, "events": {"I": 3, "U": 2, "D": 1},
              "inserted": {"public.item": 4}, "deleted": {"public.item": 1},
              "partitions_created": 1}
    report.update(fields)
    return report


def collect(*slots, clock=time.time):
    registry = CollectorRegistry()
    master = FakeMaster(*slots)
    registry.register(metrics.JobCollector(lambda: metrics.read_jobs(master), clock))
    text = generate_latest(registry).decode()
    return text, parse_samples(text)


def test_collector_counts_feature_reports(tmp_path):
    slot = load_slot(tmp_path, "orders")
    slot.handle_report(batch_report(events_skipped=4, dead_letters=2, columns_added=1,
                                    values_dropped=7), 1.0)
    slot.handle_report(batch_report(dead_letters=1), 2.0)
    slot.handle_report({"kind": "retention", "action": "drop", "count": 3}, 3.0)
    slot.handle_report({"kind": "retention", "action": "detach", "count": 1}, 4.0)
    _, samples = collect(slot)

    assert sample(samples, "cubemux_events_skipped_total", job="orders") == 4
    assert sample(samples, "cubemux_dead_letters_total", job="orders") == 3
    assert sample(samples, "cubemux_columns_added_total", job="orders") == 1
    assert sample(samples, "cubemux_values_dropped_total", job="orders") == 7
    assert sample(samples, "cubemux_partitions_retired_total", job="orders",
                  action="drop") == 3
    assert sample(samples, "cubemux_partitions_retired_total", job="orders",
                  action="detach") == 1


def test_collector_adds_up_batch_reports(tmp_path):
    slot = load_slot(tmp_path, "orders")
    slot.handle_report(batch_report(seconds=0.2), 1.0)
    slot.handle_report(batch_report(seconds=3.0, events={"I": 1}, deleted={},
                                    inserted={"public.item": 1, "sales.order": 2},
                                    partitions_created=0), 2.0)
    # A skipped batch's report carries no counts.
    slot.handle_report({"kind": "batch", "time": time.time(), "seconds": 0.01,
                        "skipped": True, "batch_id": 9, "tick_id": 10}, 3.0)
    _, samples = collect(slot)

    assert sample(samples, "cubemux_batches_total", job="orders") == 3
    assert sample(samples, "cubemux_batches_skipped_total", job="orders") == 1
    assert sample(samples, "cubemux_events_total", job="orders", op="insert") == 4
    assert sample(samples, "cubemux_events_total", job="orders", op="update") == 2
    assert sample(samples, "cubemux_events_total", job="orders", op="delete") == 1
    assert sample(samples, "cubemux_rows_inserted_total", job="orders",
                  table="public.item") == 5
    assert sample(samples, "cubemux_rows_inserted_total", job="orders",
                  table="sales.order") == 2
    assert sample(samples, "cubemux_rows_deleted_total", job="orders",
                  table="public.item") == 1
    assert sample(samples, "cubemux_partitions_created_total", job="orders") == 1


def test_collector_histogram_buckets(tmp_path):
    slot = load_slot(tmp_path, "orders")
    for seconds in (0.01, 0.2, 3.0, 5000.0):
        slot.handle_report(batch_report(seconds=seconds), 1.0)
    _, samples = collect(slot)

    def bucket(le):
        return sample(samples, "cubemux_batch_duration_seconds_bucket",
                      job="orders", le=le)
    # A duration equal to a bound counts in that bound's bucket.
    assert bucket("0.01") == 1
    assert bucket("0.1") == 1
    assert bucket("0.25") == 2
    assert bucket("5.0") == 3
    assert bucket("1800.0") == 3
    assert bucket("+Inf") == 4
    assert sample(samples, "cubemux_batch_duration_seconds_count", job="orders") == 4
    assert sample(samples, "cubemux_batch_duration_seconds_sum",
                  job="orders") == pytest.approx(5003.21)


def test_collector_job_state_one_series_per_state(tmp_path):
    slots = [load_slot(tmp_path, "job_%s" % state, state=state) for state in states.ALL]
    _, samples = collect(*slots)
    for slot in slots:
        for state in states.ALL:
            expected = 1 if state == slot.state else 0
            assert sample(samples, "cubemux_job_state", job=slot.name,
                          state=state) == expected
        up = 1 if slot.state == states.RUNNING else 0
        assert sample(samples, "cubemux_worker_up", job=slot.name) == up


def test_collector_standby_worker(tmp_path):
    slot = load_slot(tmp_path, "orders")
    _, samples = collect(slot)
    assert sample(samples, "cubemux_worker_standby", job="orders") == 0
    slot.handle_report({"kind": "standby", "waiting": True, "time": time.time()}, 1.0)
    _, samples = collect(slot)
    assert sample(samples, "cubemux_worker_standby", job="orders") == 1
    assert sample(samples, "cubemux_worker_up", job="orders") == 1
    healthy, body = metrics.health(metrics.read_jobs(FakeMaster(slot)), time.time())
    assert healthy
    assert body["jobs"][0]["standby"] is True


def test_collector_queue_figures_need_a_worker(tmp_path):
    slot = load_slot(tmp_path, "orders")
    slot.handle_report({"kind": "queue", "time": time.time(),
                        "consumer_lag_seconds": 12.5, "pending_events": 40.0,
                        "last_seen_seconds": 0.1, "ticker_lag_seconds": 2.0}, 1.0)
    _, samples = collect(slot)
    assert sample(samples, "cubemux_consumer_lag_seconds", job="orders") == 12.5
    assert sample(samples, "cubemux_pending_events", job="orders") == 40
    assert sample(samples, "cubemux_ticker_lag_seconds", job="orders",
                  queue="orders") == 2.0

    slot.worker_gone(time.monotonic())
    slot.change_state(states.BACKOFF, "moved by the test")
    _, samples = collect(slot)
    assert sample(samples, "cubemux_consumer_lag_seconds", job="orders") is None
    assert sample(samples, "cubemux_pending_events", job="orders") is None
    assert sample(samples, "cubemux_ticker_lag_seconds", job="orders",
                  queue="orders") is None


def test_collector_batch_open_seconds(tmp_path):
    slot = load_slot(tmp_path, "orders")
    slot.handle_report({"kind": "beat", "time": 1000.0, "batch_open_since": 1000.0}, 1.0)
    _, samples = collect(slot, clock=lambda: 1042.5)
    assert sample(samples, "cubemux_batch_open_seconds", job="orders") == 42.5

    slot.handle_report(batch_report(time=1050.0), 2.0)
    _, samples = collect(slot, clock=lambda: 1060.0)
    assert sample(samples, "cubemux_batch_open_seconds", job="orders") == 0
    assert sample(samples, "cubemux_last_batch_timestamp_seconds", job="orders") == 1050.0


def test_collector_no_batch_timestamp_before_first_batch(tmp_path):
    _, samples = collect(load_slot(tmp_path, "orders"))
    assert sample(samples, "cubemux_last_batch_timestamp_seconds", job="orders") is None
    assert sample(samples, "cubemux_batches_total", job="orders") == 0
    for kind in metrics.ERROR_KINDS:
        assert sample(samples, "cubemux_errors_total", job="orders", kind=kind) == 0


def test_collector_duplicate_job_names_stay_apart(tmp_path):
    first = load_slot(tmp_path, "a", job_name="orders")
    second = load_slot(tmp_path, "b", job_name="orders", pgq_consumer_id="other")
    second.handle_report(batch_report(), 1.0)
    _, samples = collect(first, second)
    assert sample(samples, "cubemux_batches_total", job="orders") == 0
    assert sample(samples, "cubemux_batches_total", job="orders@b.ini") == 1


def test_collector_labels_omit_connection_strings(tmp_path):
    slot = load_slot(tmp_path, "orders")
    slot.handle_report(batch_report(), 1.0)
    text, samples = collect(slot)
    assert PASSWORD not in text
    assert "dbname" not in text
    allowed = {"job", "op", "table", "state", "kind", "queue", "action", "le"}
    for _name, labels in samples:
        assert {key for key, _value in labels} <= allowed


def test_exit_error_kinds():
    cases = {0: None, 1: metrics.ERROR_CRASH, 2: metrics.ERROR_CRASH,
             3: metrics.ERROR_CONFIG, 4: metrics.ERROR_LOST_POSITION,
             5: metrics.ERROR_BAD_EVENT, 77: metrics.ERROR_CRASH,
             -signal.SIGKILL: metrics.ERROR_CRASH,
             -signal.SIGSEGV: metrics.ERROR_CRASH}
    for code, kind in cases.items():
        assert metrics.exit_error_kind(code) == kind, code


# The master's error counting, with a fake operating system.


class FakeSystem:
    def __init__(self):
        self.now = 1000.0
        self.killed = []

    def monotonic(self):
        return self.now

    def kill(self, pid, signum):
        self.killed.append((pid, signum))


def exited_with(code):
    return code << 8


def killed_by(signum):
    return signum


def start_worker(slot, pid, now):
    """Move SLOT to running with a worker PID, as spawn() and a report would."""
    slot.worker_started(pid, None, now)
    slot.change_state(states.STARTING, "spawned by the test")
    slot.handle_report({"kind": "started", "time": time.time()}, now)


def test_master_counts_errors_by_exit_code(tmp_path):
    system = FakeSystem()
    master = Master(str(tmp_path), system=system)
    slot = load_slot(tmp_path, "orders", state=states.STOPPED)
    master.slots[slot.path] = slot

    for pid, status in ((201, exited_with(1)), (202, killed_by(signal.SIGSEGV)),
                        (203, exited_with(4))):
        start_worker(slot, pid, system.now)
        master.worker_exited(slot, status)
    assert slot.errors == {metrics.ERROR_CRASH: 2, metrics.ERROR_LOST_POSITION: 1}
    assert slot.state == states.FATAL
    assert slot.restarts == 2


def test_master_counts_silent_worker_as_timeout(tmp_path):
    system = FakeSystem()
    master = Master(str(tmp_path), system=system)
    slot = load_slot(tmp_path, "orders", pid=200, worker_timeout=10)
    slot.last_beat = system.now
    master.slots[slot.path] = slot

    system.now += 11
    master.murder_silent()
    master.murder_silent()
    assert system.killed == [(200, signal.SIGKILL)]
    master.worker_exited(slot, killed_by(signal.SIGKILL))
    assert slot.errors == {metrics.ERROR_TIMEOUT: 1}
    assert slot.restarts == 1


def test_master_counts_invalid_job_file(tmp_path):
    write_job_file(tmp_path / "broken.ini", dst_db="dbname=dst")
    master = Master(str(tmp_path), system=FakeSystem())
    master.reload(first=True)
    (slot,) = master.slots.values()
    assert slot.state == states.FATAL
    assert slot.errors == {metrics.ERROR_CONFIG: 1}


# The HTTP endpoint, in this process.


@pytest.fixture
def served_slots(tmp_path):
    master = FakeMaster(load_slot(tmp_path, "a"), load_slot(tmp_path, "b"))
    server = start_server("127.0.0.1", 0, lambda: metrics.read_jobs(master))
    yield master, server.url
    server.stop()


def test_healthz_ok_when_every_job_runs(served_slots):
    _master, url = served_slots
    status, text = http_get(url + "/healthz")
    body = json.loads(text)
    assert status == 200
    assert body["status"] == "ok"
    assert [entry["job"] for entry in body["jobs"]] == ["a", "b"]
    assert PASSWORD not in text


def test_healthz_503_when_job_not_running(served_slots):
    master, url = served_slots
    slot = master.slots[sorted(master.slots)[1]]
    slot.worker_gone(time.monotonic())
    slot.change_state(states.BACKOFF, "moved by the test")
    status, text = http_get(url + "/healthz")
    body = json.loads(text)
    assert status == 503
    assert body["status"] == "unhealthy"
    assert [entry["state"] for entry in body["jobs"]] == ["running", "backoff"]


def test_endpoint_serves_both_formats(served_slots):
    _master, url = served_slots
    status, text = http_get(url + "/metrics")
    assert status == 200
    assert 'cubemux_worker_up{job="a"} 1.0' in text
    status, text = http_get(url + "/metrics",
                            accept="application/openmetrics-text; version=1.0.0")
    assert status == 200
    assert text.endswith("# EOF\n")
    assert 'cubemux_worker_up{job="a"} 1.0' in text


def test_endpoint_unknown_path_not_found(served_slots):
    _master, url = served_slots
    status, _text = http_get(url + "/other")
    assert status == 404


# Real runs of the master.


def test_counters_match_destination_across_restart(src_cluster, dst_cluster, jobs_dir,
                                                   master_process):
    latest = make_setup(src_cluster, dst_cluster, jobs_dir)
    every = make_setup(src_cluster, dst_cluster, jobs_dir)
    latest.table("create table item (id int primary key, name text)", "item")
    # keep_all keeps every version, so the destination table has no key.
    every.table("create table event (id int primary key, name text)", "event",
                dst_ddl="create table event (id int, name text)")
    add_job(latest, "latest", mode="keep_latest")
    add_job(every, "every", mode="keep_all")
    master_process.start().wait_running("latest", "every")

    # First batch of each job.
    latest.src_exec("insert into item select i, 'n' || i from generate_series(1, 10) i")
    latest.src_exec("update item set name = 'changed' where id <= 3")
    latest.src_exec("delete from item where id >= 9")
    latest.tick()
    every.src_exec("insert into event select i, 'n' || i from generate_series(1, 5) i")
    every.src_exec("update event set name = 'changed' where id <= 2")
    every.tick()
    master_process.wait_value("cubemux_batches_total", 1, job="latest")
    samples = master_process.wait_value("cubemux_batches_total", 1, job="every")

    def value(name, **labels):
        return sample(samples, name, **labels)

    assert value("cubemux_events_total", job="latest", op="insert") == 10
    assert value("cubemux_events_total", job="latest", op="update") == 3
    assert value("cubemux_events_total", job="latest", op="delete") == 2
    assert value("cubemux_rows_inserted_total", job="latest", table="public.item") == 8
    assert value("cubemux_rows_deleted_total", job="latest", table="public.item") == 0
    assert destination_rows(latest, "item") == 8
    assert value("cubemux_events_total", job="every", op="insert") == 5
    assert value("cubemux_events_total", job="every", op="update") == 2
    assert value("cubemux_events_total", job="every", op="delete") == 0
    assert value("cubemux_rows_inserted_total", job="every", table="public.event") == 7
    assert destination_rows(every, "event") == 7
    for job in ("latest", "every"):
        assert value("cubemux_partitions_created_total", job=job) == 1
        assert value("cubemux_batch_duration_seconds_count", job=job) == 1
        assert value("cubemux_worker_up", job=job) == 1
        assert value("cubemux_job_state", job=job, state="running") == 1
        assert value("cubemux_worker_restarts_total", job=job) == 0
        assert abs(value("cubemux_last_batch_timestamp_seconds", job=job)
                   - time.time()) < 60

    # The worker reads the queue figures from PgQ every few seconds. Once it
    # reads them after its batch, no event is pending.
    def queue_figures():
        samples = master_process.scrape()
        figures = [sample(samples, "cubemux_consumer_lag_seconds", job="latest"),
                   sample(samples, "cubemux_pending_events", job="latest"),
                   sample(samples, "cubemux_ticker_lag_seconds", job="latest",
                          queue="testq")]
        return figures if None not in figures and figures[1] == 0 else None
    lag, _pending, ticker_lag = wait_for(queue_figures, 15, "the queue figures")
    assert 0 <= lag < 60
    assert 0 <= ticker_lag < 60

    # A worker killed from outside is restarted, and the counters go on.
    old_pid = master_process.worker_pid("latest")
    os.kill(old_pid, signal.SIGKILL)
    samples = master_process.wait_value("cubemux_worker_restarts_total", 1, job="latest")
    assert sample(samples, "cubemux_batches_total", job="latest") == 1
    assert sample(samples, "cubemux_events_total", job="latest", op="insert") == 10
    assert sample(samples, "cubemux_errors_total", job="latest", kind="crash") == 1
    master_process.wait_running("latest")
    assert master_process.job_health("latest")["pid"] != old_pid

    latest.src_exec("update item set name = 'again' where id in (4, 5)")
    latest.src_exec("insert into item values (11, 'n11')")
    latest.tick()
    samples = master_process.wait_value("cubemux_batches_total", 2, job="latest")
    assert sample(samples, "cubemux_events_total", job="latest", op="insert") == 11
    assert sample(samples, "cubemux_events_total", job="latest", op="update") == 5
    assert sample(samples, "cubemux_events_total", job="latest", op="delete") == 2
    inserted = sample(samples, "cubemux_rows_inserted_total", job="latest",
                      table="public.item")
    deleted = sample(samples, "cubemux_rows_deleted_total", job="latest",
                     table="public.item")
    assert inserted == 11
    assert inserted - deleted == destination_rows(latest, "item") == 9
    assert sample(samples, "cubemux_batch_duration_seconds_count", job="latest") == 2
    assert sample(samples, "cubemux_errors_total", job="every", kind="crash") == 0

    text = master_process.metrics_text()
    status, health = http_get(master_process.url + "/healthz")
    assert status == 200
    for secret in (PASSWORD, latest.src_dsn, latest.dst_dsn):
        assert secret not in text
        assert secret not in health
    latest.close()
    every.close()


def test_batch_open_seconds_shows_blocked_batch(src_cluster, dst_cluster, jobs_dir,
                                                master_process):
    setup = make_setup(src_cluster, dst_cluster, jobs_dir)
    setup.table("create table item (id int primary key, name text)", "item")
    add_job(setup, "blocked", mode="keep_latest")
    master_process.start().wait_running("blocked")
    setup.src_exec("insert into item values (1, 'a')")
    setup.tick()
    master_process.wait_value("cubemux_batches_total", 1, job="blocked")
    (partition,) = setup.dst_query(
        "select relname from pg_class where relname like 'item\\_%' and relkind = 'r'")[0]

    # A lock on the partition holds the next batch open.
    locker = psycopg2.connect(setup.dst_dsn)
    try:
        with locker.cursor() as cur:
            cur.execute('lock table public."%s" in access exclusive mode' % partition)
        setup.src_exec("update item set name = 'b' where id = 1")
        setup.tick()

        def open_seconds():
            value = sample(master_process.scrape(), "cubemux_batch_open_seconds",
                           job="blocked")
            return value if value and value > 1.0 else None
        wait_for(open_seconds, 30, "the open batch to show")
        assert master_process.job_health("blocked")["batch_open_seconds"] > 1.0
    finally:
        locker.rollback()
        locker.close()

    samples = master_process.wait_value("cubemux_batches_total", 2, job="blocked")
    assert sample(samples, "cubemux_batch_open_seconds", job="blocked") == 0
    assert sample(samples, "cubemux_batch_duration_seconds_count", job="blocked") == 2
    assert sample(samples, "cubemux_batch_duration_seconds_sum", job="blocked") > 1.0
    setup.close()


def test_fatal_jobs_counted_and_unhealthy(src_cluster, dst_cluster, jobs_dir,
                                          master_process):
    setup = make_setup(src_cluster, dst_cluster, jobs_dir)
    setup.table("create table item (id int primary key, name text)", "item")
    # keep_all cannot apply a delete, so the worker exits as a bad event.
    add_job(setup, "deletes", mode="keep_all")
    write_job_file(jobs_dir / "broken.ini", dst_db="dbname=none")
    master_process.start().wait_running("deletes")
    setup.src_exec("insert into item values (1, 'a')")
    setup.src_exec("delete from item")
    setup.tick()

    samples = master_process.wait_value("cubemux_job_state", 1, job="deletes",
                                        state="fatal")
    assert sample(samples, "cubemux_errors_total", job="deletes", kind="bad_event") == 1
    assert sample(samples, "cubemux_errors_total", job="deletes", kind="crash") == 0
    assert sample(samples, "cubemux_worker_restarts_total", job="deletes") == 0
    assert sample(samples, "cubemux_worker_up", job="deletes") == 0
    assert sample(samples, "cubemux_batches_total", job="deletes") == 0
    assert sample(samples, "cubemux_job_state", job="broken", state="fatal") == 1
    assert sample(samples, "cubemux_errors_total", job="broken", kind="config") == 1

    status, body = master_process.health()
    assert status == 503
    assert body["status"] == "unhealthy"
    assert {entry["job"]: entry["state"] for entry in body["jobs"]} == {
        "broken": "fatal", "deletes": "fatal"}
    setup.close()


def test_metrics_port_in_use_stops_master(jobs_dir, tmp_path):
    server = start_server("127.0.0.1", 0, lambda: [])
    try:
        port = server.server_address[1]
        result = subprocess.run(
            [sys.executable, "-m", "cubemux", "start", str(jobs_dir),
             "--metrics-port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=30)
    finally:
        server.stop()
    assert result.returncode != 0
    assert "cannot serve metrics on 127.0.0.1 port %d" % port in result.stderr
