"""The Grafana dashboard and the alerting rules against a real Prometheus.

A Prometheus server of the Debian package scrapes a running master on
127.0.0.1 every second, with its own config and a temporary storage folder.
Every dashboard panel's query must then be valid PromQL and return data,
and every alerting rule must load and evaluate without an error.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest

from test_metrics import (MasterProcess, add_job, http_get, make_setup,
                          wait_for)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "cubemux.json")
ALERTS = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")

# Values for the dashboard's variables when its queries are sent to
# Prometheus directly, as Grafana sends them with "All" selected. Grafana
# makes $__rate_interval at least four scrape intervals, and 15 s is well
# above four of this test's 1 s intervals.
VARIABLES = {"$instance": ".+", "$job": ".+", "$__rate_interval": "15s"}

PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: cubemux
    honor_labels: true
    static_configs:
      - targets: ["{target}"]
"""


def load_dashboard():
    with open(DASHBOARD) as handle:
        return json.load(handle)


def all_panels(dashboard):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard):
    """Return [(panel title, refId, expr)] of every query in the dashboard."""
    queries = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            queries.append((panel["title"], target["refId"], target["expr"]))
    return queries


def substitute(expr):
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, "unknown variable in %r" % expr
    return expr


def free_port():
    # NOTE: another process could take the port between close() and the
    # server's bind. The server then fails to start, and the test fails with
    # the server's log.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The dashboard file on its own.


def test_dashboard_is_importable_json():
    dashboard = load_dashboard()
    assert dashboard["id"] is None
    assert dashboard["uid"] == "cubemux"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids))
    boxes = []
    for panel in all_panels(dashboard):
        grid = panel["gridPos"]
        box = (grid["x"], grid["y"], grid["x"] + grid["w"], grid["y"] + grid["h"])
        for other_title, other in boxes:
            overlap = (box[0] < other[2] and other[0] < box[2]
                       and box[1] < other[3] and other[1] < box[3])
            assert not overlap, "%s overlaps %s" % (panel["title"], other_title)
        boxes.append((panel["title"], box))
    for panel in all_panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_variables_defined():
    dashboard = load_dashboard()
    names = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert names == {"datasource", "instance", "job"}
    used = set()
    for _title, _ref, expr in panel_queries(dashboard):
        used.update(re.findall(r"\$(\w+)", expr))
    assert used <= {"instance", "job", "__rate_interval"}


def test_dashboard_covers_required_figures():
    exprs = " ".join(expr for _t, _r, expr in panel_queries(load_dashboard()))
    for name in ("cubemux_rows_inserted_total", "cubemux_rows_deleted_total",
                 "cubemux_events_total", "cubemux_batches_total",
                 "cubemux_consumer_lag_seconds", "cubemux_pending_events",
                 "cubemux_ticker_lag_seconds", "cubemux_batch_duration_seconds_bucket",
                 "cubemux_partitions_created_total", "cubemux_worker_restarts_total",
                 "cubemux_job_state", "cubemux_batch_open_seconds"):
        assert name in exprs, name
    assert "histogram_quantile(0.5," in exprs
    assert "histogram_quantile(0.99," in exprs


# A real Prometheus server.


class PrometheusServer:
    """A Prometheus process on 127.0.0.1 with its own config and storage."""

    def __init__(self, directory, target):
        self.directory = directory
        self.target = target
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.process = None
        self.log_path = os.path.join(directory, "prometheus.log")

    def start(self):
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: install Debian's prometheus package"
        config_path = os.path.join(self.directory, "prometheus.yml")
        with open(config_path, "w") as handle:
            handle.write(PROMETHEUS_CONFIG.format(rules=ALERTS, target=self.target))
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [binary, "--config.file=" + config_path,
             "--storage.tsdb.path=" + os.path.join(self.directory, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port,
             "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(self._ready, 60, "Prometheus to be ready")

    def _ready(self):
        if self.process.poll() is not None:
            raise AssertionError("prometheus exited with code %s:\n%s"
                                 % (self.process.returncode, self.log()))
        try:
            status, _body = http_get(self.url + "/-/ready")
        except OSError:
            return False
        return status == 200

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def api(self, path, **params):
        url = "%s/api/v1/%s?%s" % (self.url, path, urllib.parse.urlencode(params))
        status, body = http_get(url)
        return status, json.loads(body)

    def query(self, expr):
        """Return the result of an instant query. Fail on invalid PromQL."""
        status, body = self.api("query", query=expr)
        message = "query %r failed: %s" % (expr, body.get("error", body))
        assert status == 200, message
        assert body["status"] == "success", message
        return body["data"]["result"]

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Traffic:
    """Writes rows into each source and ticks its queue until stopped."""

    def __init__(self, setups, pause=0.5):
        self.setups = setups
        self.pause = pause
        self.stopping = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self):
        key = 0
        try:
            while not self.stopping.is_set():
                key += 1
                for setup in self.setups:
                    setup.src_exec("insert into item values (%s, 'new')", (key,))
                    setup.src_exec("update item set name = 'changed' where id = %s",
                                   (key,))
                    if key > 1:
                        setup.src_exec("delete from item where id = %s", (key - 1,))
                    setup.tick()
                self.stopping.wait(self.pause)
        except Exception as error:
            self.error = error

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=30)
        assert self.error is None, "writing traffic failed: %r" % self.error


@pytest.fixture(scope="module")
def prometheus_run(src_cluster, dst_cluster, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("prometheus")
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    setups = [make_setup(src_cluster, dst_cluster, jobs_dir) for _ in range(2)]
    for setup in setups:
        setup.table("create table item (id int primary key, name text)", "item")
    add_job(setups[0], "alpha", mode="keep_latest")
    add_job(setups[1], "beta", mode="keep_latest")
    master = MasterProcess(jobs_dir, tmp_path / "master.log")
    prometheus = PrometheusServer(str(tmp_path), master_target(master.start()))
    try:
        master.wait_running("alpha", "beta")
        prometheus.start()
        yield master, prometheus, setups
    finally:
        prometheus.stop()
        master.stop()
        for setup in setups:
            setup.close()


def master_target(master):
    host_port = master.url.split("//", 1)[1]
    assert host_port.startswith("127.0.0.1:")
    return host_port


def test_dashboard_queries_return_data(prometheus_run):
    master, prometheus, setups = prometheus_run
    queries = panel_queries(load_dashboard())
    with Traffic(setups):
        wait_for(lambda: prometheus.query('up{job="cubemux"} == 1'), 30,
                 "Prometheus to scrape the master")
        deadline = time.monotonic() + 90
        pending = list(queries)
        while pending and time.monotonic() < deadline:
            for title, ref, expr in list(pending):
                result = prometheus.query(substitute(expr))
                if any(item["value"][1] != "NaN" for item in result):
                    pending.remove((title, ref, expr))
            if pending:
                time.sleep(1.0)
    assert not pending, "panels without data: %s\nmaster log:\n%s" % (
        [(title, ref, substitute(expr)) for title, ref, expr in pending],
        master.log()[-3000:])

    # The template variables' queries find both jobs on the master.
    series = prometheus.query('cubemux_worker_up{instance=~".+", job=~".+"}')
    assert {item["metric"]["job"] for item in series} == {"alpha", "beta"}
    assert {item["metric"]["instance"] for item in series} == {master_target(master)}


def test_alert_rules_load_and_evaluate(prometheus_run):
    _master, prometheus, _setups = prometheus_run

    def evaluated_rules():
        status, body = prometheus.api("rules", type="alert")
        assert status == 200, body
        groups = body["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule["health"] != "unknown" for rule in rules):
            return rules
        return None
    rules = wait_for(evaluated_rules, 30, "the alerting rules to be evaluated")
    with open(ALERTS) as handle:
        names = re.findall(r"^\s*- alert:\s*(\w+)", handle.read(), re.MULTILINE)
    assert sorted(rule["name"] for rule in rules) == sorted(names)
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    # No alert fires while both jobs run and keep up.
    firing = prometheus.query('ALERTS{alertstate="firing"}')
    assert firing == []
