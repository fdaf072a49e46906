"""The alerting rules and the scrape config example, checked by promtool.

promtool comes with Debian's prometheus package. Each test fails when it is
missing, because a skipped check would pass rules that Prometheus rejects.
"""

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES_DIR = os.path.join(ROOT, "deploy", "prometheus")
ALERTS = os.path.join(RULES_DIR, "alerts.yml")
ALERT_TESTS = os.path.join(RULES_DIR, "alerts_test.yml")
SCRAPE_CONFIG = os.path.join(RULES_DIR, "prometheus.yml")

# An expression that never returns a sample.
NEVER = "vector(1) == 0"


def promtool(*args, cwd=None):
    path = shutil.which("promtool")
    assert path, "promtool not found: install Debian's prometheus package"
    return subprocess.run([path, *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def alert_names(text):
    return re.findall(r"^\s*- alert:\s*(\w+)\s*$", text, re.MULTILINE)


def replace_expr(text, alert, expr):
    """Return rules TEXT with ALERT's expression replaced by EXPR.

    The expression is the ``expr:`` line after ``- alert: ALERT`` and, for a
    block scalar, the more deeply indented lines that follow it.
    """
    lines = text.splitlines()
    start = lines.index("      - alert: %s" % alert)
    index = next(i for i in range(start + 1, len(lines))
                 if lines[i].strip().startswith("expr:"))
    indent = len(lines[index]) - len(lines[index].lstrip())
    end = index + 1
    if lines[index].rstrip().endswith("|"):
        while end < len(lines) and (len(lines[end]) - len(lines[end].lstrip()) > indent
                                    or not lines[end].strip()):
            end += 1
    lines[index:end] = [" " * indent + "expr: " + expr]
    return "\n".join(lines) + "\n"


def copy_rules(tmp_path, rules_text):
    (tmp_path / "alerts.yml").write_text(rules_text)
    shutil.copy(ALERT_TESTS, tmp_path / "alerts_test.yml")
    return str(tmp_path / "alerts_test.yml")


def test_rules_pass_promtool_check():
    result = promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(ALERTS) as handle:
        count = len(alert_names(handle.read()))
    assert "SUCCESS: %d rules found" % count in result.stdout


def test_rules_pass_unit_tests():
    result = promtool("test", "rules", ALERT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_required_alerts_present():
    with open(ALERTS) as handle:
        names = set(alert_names(handle.read()))
    required = {"CubemuxJobDown", "CubemuxJobFatal", "CubemuxConsumerLagHigh",
                "CubemuxTickerStopped", "CubemuxBatchOpenTooLong",
                "CubemuxRestartLoop", "CubemuxNoBatches", "CubemuxMasterDown"}
    assert required <= names


def _all_alerts():
    with open(ALERTS) as handle:
        return alert_names(handle.read())


@pytest.mark.parametrize("alert", _all_alerts())
def test_unit_tests_catch_silenced_alert(alert, tmp_path):
    # Each alert has a unit test that expects it to fire, so an alert whose
    # expression never matches must fail the tests.
    with open(ALERTS) as handle:
        silenced = replace_expr(handle.read(), alert, NEVER)
    tests = copy_rules(tmp_path, silenced)
    assert promtool("check", "rules", str(tmp_path / "alerts.yml")).returncode == 0
    result = promtool("test", "rules", tests)
    assert result.returncode != 0
    assert "alertname: %s," % alert in result.stdout + result.stderr


def test_unit_tests_catch_changed_threshold(tmp_path):
    with open(ALERTS) as handle:
        text = handle.read()
    assert text.count("cubemux_consumer_lag_seconds > 600") == 1
    tests = copy_rules(tmp_path, text.replace("cubemux_consumer_lag_seconds > 600",
                                              "cubemux_consumer_lag_seconds > 60"))
    result = promtool("test", "rules", tests)
    assert result.returncode != 0
    assert "alertname: CubemuxConsumerLagHigh," in result.stdout + result.stderr


def test_scrape_config_example_passes_promtool():
    result = promtool("check", "config", SCRAPE_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(SCRAPE_CONFIG) as handle:
        text = handle.read()
    assert "honor_labels: true" in text
