"""The sample jobs of jobs.d and the demo that runs them on a pgbench workload."""

import os
import subprocess
import sys

from cubemux.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS_DIR = os.path.join(REPO, "jobs.d")
DEMO = os.path.join(REPO, "demo", "demo.py")


def test_sample_jobs_pass_check(capsys):
    code = main(["check", JOBS_DIR])

    output = capsys.readouterr()
    assert code == 0, output.err
    balances = ("balances_cube.ini: ok (job balances_cube, queue balances, "
                "mode keep_latest)")
    history = "history_cube.ini: ok (job history_cube, queue history, mode keep_all)"
    assert balances in output.out
    assert history in output.out
    assert output.err == ""


def test_demo_fills_checked_partitions():
    # A 3-second workload keeps this test short.
    result = subprocess.run([sys.executable, DEMO, "--seconds", "3", "--clients", "2"],
                            capture_output=True, text=True, timeout=600)

    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    rows = [line.split() for line in result.stdout.splitlines()
            if line.startswith(("balances_cube ", "history_cube "))]
    tables = {row[2].rsplit("_", 3)[0]: row for row in rows if len(row) == 6}
    expected_tables = ["public.pgbench_accounts", "public.pgbench_branches",
                       "public.pgbench_history", "public.pgbench_tellers"]
    assert sorted(tables) == expected_tables, report
    # The check column compares every partition of a table with the source,
    # so it also passes when the run spans midnight and fills two partitions.
    for table, row in tables.items():
        assert row[5] == "ok", "%s\n%s" % (table, report)
        assert int(row[4]) > 0, "%s\n%s" % (table, report)
    assert report.count("pgq_ext.completed_tick") == 2, report
    assert "FAILED" not in report
