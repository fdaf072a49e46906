"""`cubemux check FILE|DIR`, run as the installed command."""

import os
import subprocess
import sys

import pytest

from cubemux.errors import EXIT_CONFIG

from test_config import MANUAL_EXAMPLE, MANUAL_EXAMPLE_INDENTED, MINIMAL

# The console script that the editable install put next to the interpreter.
CUBEMUX = os.path.join(os.path.dirname(sys.executable), "cubemux")


def check(path, *options):
    assert os.path.exists(CUBEMUX), "no cubemux next to %s" % sys.executable
    return subprocess.run([CUBEMUX, "check", *options, str(path)],
                          capture_output=True, text=True, timeout=60)


def job(queue="q", **extra):
    text = MINIMAL.replace("pgq_queue_name = q", "pgq_queue_name = %s" % queue)
    return text + "".join("%s = %s\n" % item for item in extra.items())


def test_check_valid_file(tmp_path):
    path = tmp_path / "cube.ini"
    path.write_text(job(mode="keep_all"))
    result = check(path)
    assert result.returncode == 0
    assert result.stdout == "%s: ok (job cube, queue q, mode keep_all)\n" % path
    assert result.stderr == ""


def test_check_quiet_prints_nothing(tmp_path):
    path = tmp_path / "cube.ini"
    path.write_text(job())
    result = check(path, "-q")
    assert result.returncode == 0
    assert result.stdout == ""


def test_check_manual_example(tmp_path):
    plain = tmp_path / "plain.ini"
    plain.write_text(MANUAL_EXAMPLE)
    indented = tmp_path / "indented.ini"
    indented.write_text(MANUAL_EXAMPLE_INDENTED.replace(
        "some_queue_to_cube", "other_job"))
    result = check(tmp_path)
    assert result.returncode == 0
    assert "plain.ini: ok (job some_queue_to_cube, queue udata." in result.stdout
    assert "indented.ini: ok (job other_job, queue udata." in result.stdout
    assert result.stderr == ""


def test_check_prints_every_error(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text("[cube_dispatcher]\nmode = newest\nloop_delay = soon\n"
                    "use_skylog = perhaps\nlogfile = %(nowhere)s\nbroken line\n")
    result = check(path)
    assert result.returncode == EXIT_CONFIG
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("%s:2: [cube_dispatcher] mode = 'newest'" % path)
    assert lines[1].startswith("%s:3: [cube_dispatcher] loop_delay = 'soon'" % path)
    assert lines[2].startswith("%s:4: [cube_dispatcher] use_skylog = 'perhaps'" % path)
    assert lines[3].startswith("%s:5: [cube_dispatcher] logfile: %%(nowhere)s" % path)
    assert lines[4].startswith("%s:6: invalid line 'broken line'" % path)
    assert lines[5].startswith("%s: [cube_dispatcher] src_db is missing" % path)
    assert lines[6].startswith("%s: [cube_dispatcher] dst_db is missing" % path)
    assert lines[7].startswith("%s: [cube_dispatcher] pgq_queue_name is missing" % path)
    assert len(lines) == 8


def test_check_missing_section(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text("src_db = x\n")
    result = check(path)
    assert result.returncode == EXIT_CONFIG
    assert "%s:1: the line is above the first section header" % path in result.stderr
    assert "%s: section [cube_dispatcher] is missing" % path in result.stderr


def test_check_invalid_utf8(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_bytes(job().encode() + b"job_name = caf\xe9\n")
    result = check(path)
    assert result.returncode == EXIT_CONFIG
    assert "%s:5: the line is not valid UTF-8" % path in result.stderr


def test_check_missing_file(tmp_path):
    path = tmp_path / "absent.ini"
    result = check(path)
    assert result.returncode == EXIT_CONFIG
    assert result.stderr == (
        "%s: cannot read the job file: No such file or directory\n" % path)


def test_check_folder_mixed(tmp_path):
    (tmp_path / "good.ini").write_text(job(queue="q1"))
    (tmp_path / "bad.ini").write_text(job(queue="q2", mode="latest"))
    result = check(tmp_path)
    assert result.returncode == EXIT_CONFIG
    assert "good.ini: ok (job good, queue q1, mode keep_latest)" in result.stdout
    assert "bad.ini:5: [cube_dispatcher] mode = 'latest' is invalid" in result.stderr


def test_check_folder_all_valid(tmp_path):
    (tmp_path / "a.ini").write_text(job(queue="q1"))
    (tmp_path / "b.ini").write_text(job(queue="q2"))
    result = check(tmp_path)
    assert result.returncode == 0
    assert result.stdout.count(": ok (") == 2


def test_check_empty_folder(tmp_path):
    result = check(tmp_path)
    assert result.returncode != 0
    assert "no *.ini job files found" in result.stderr


def test_check_keep_all_primary_key(tmp_path):
    path = tmp_path / "cube.ini"
    path.write_text(MANUAL_EXAMPLE.replace("mode = keep_latest", "mode = keep_all"))
    result = check(path)
    assert result.returncode == 0
    assert result.stderr.startswith("warning: %s: [cube_dispatcher] part_template "
                                    "adds a primary key or unique constraint" % path)
    assert ": ok (" in result.stdout


def test_check_keep_all_unique(tmp_path):
    path = tmp_path / "cube.ini"
    path.write_text(job(mode="keep_all", part_template=(
        "create table _DEST_TABLE (like _PARENT, unique (id))")))
    result = check(path)
    assert result.returncode == 0
    assert "unique constraint" in result.stderr


def test_check_unknown_key_warns(tmp_path):
    path = tmp_path / "cube.ini"
    path.write_text(job(pgq_queue="typo"))
    result = check(path)
    assert result.returncode == 0
    expected = "warning: %s:5: [cube_dispatcher] key pgq_queue is unknown" % path
    assert expected in result.stderr


def test_check_same_queue_consumer(tmp_path):
    (tmp_path / "a.ini").write_text(job(job_name="cube"))
    (tmp_path / "b.ini").write_text(job(job_name="cube"))
    result = check(tmp_path)
    assert result.returncode == EXIT_CONFIG
    assert "b.ini: queue q and consumer cube are already used by" in result.stderr
    assert str(tmp_path / "a.ini") in result.stderr


def test_check_later_duplicate_reported(tmp_path):
    (tmp_path / "a.ini").write_text(job(pgq_consumer_id="shared"))
    (tmp_path / "b.ini").write_text(job())
    (tmp_path / "c.ini").write_text(job(pgq_consumer_id="shared"))
    result = check(tmp_path)
    assert result.returncode == EXIT_CONFIG
    assert "c.ini: queue q and consumer shared are already used by" in result.stderr
    assert "a.ini: ok" in result.stdout
    assert "b.ini: ok" in result.stdout


def test_check_consumer_position_shared(tmp_path):
    # pgq_ext keeps one position per consumer in a destination database.
    (tmp_path / "a.ini").write_text(job(queue="q1", pgq_consumer_id="cube"))
    (tmp_path / "b.ini").write_text(job(queue="q2", pgq_consumer_id="cube"))
    result = check(tmp_path)
    assert result.returncode == EXIT_CONFIG
    assert "b.ini: consumer cube already keeps its position in this dst_db" in (
        result.stderr)
    assert str(tmp_path / "a.ini") in result.stderr


def test_check_consumer_in_other_destination(tmp_path):
    (tmp_path / "a.ini").write_text(job(queue="q1", pgq_consumer_id="cube"))
    other = job(queue="q2", pgq_consumer_id="cube").replace(
        "dbname=dst", "dbname=other_dst")
    assert "dbname=other_dst" in other
    (tmp_path / "b.ini").write_text(other)
    result = check(tmp_path)
    assert result.returncode == 0, result.stderr


def test_check_same_queue_other_consumer(tmp_path):
    # Each consumer defaults to the job name, which defaults to the file name.
    (tmp_path / "a.ini").write_text(job())
    (tmp_path / "b.ini").write_text(job())
    result = check(tmp_path)
    assert result.returncode == 0


@pytest.mark.parametrize("leftover", ["a.ini~", ".a.ini", ".a.ini.swp", "#a.ini#",
                                      ".#a.ini", "a.ini.bak"])
def test_check_ignores_leftovers(tmp_path, leftover):
    (tmp_path / "a.ini").write_text(job())
    (tmp_path / leftover).write_text("this is not a job file\n")
    result = check(tmp_path)
    assert result.returncode == 0
    assert leftover not in result.stdout + result.stderr


def test_check_new_key_errors(tmp_path):
    path = tmp_path / "cube.ini"
    path.write_text(job(part_mode="date_field", retention_period="forever",
                        event_types="I,X"))
    result = check(path)
    assert result.returncode == EXIT_CONFIG
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("%s:6: [cube_dispatcher] retention_period = "
                               "'forever' is invalid: expected a number and a unit"
                               % path)
    assert lines[1].startswith("%s:7: [cube_dispatcher] event_types = 'I,X' is "
                               "invalid" % path)
    assert len(lines) == 2


def test_check_combination_error(tmp_path):
    path = tmp_path / "cube.ini"
    path.write_text(job(part_mode="date_field", period="day", dateformat="YYYY_MM"))
    result = check(path)
    assert result.returncode == EXIT_CONFIG
    lines = result.stderr.splitlines()
    assert lines[0].startswith("%s:5: [cube_dispatcher] part_mode = date_field "
                               "needs part_field" % path)
    assert lines[1].startswith("%s:7: [cube_dispatcher] dateformat = 'YYYY_MM' and "
                               "period = day are both set" % path)
    assert len(lines) == 2


def test_check_new_key_warnings(tmp_path):
    path = tmp_path / "cube.ini"
    path.write_text(job(mode="keep_all", event_types="I,U,D",
                        ignore_old_events="yes"))
    result = check(path)
    assert result.returncode == 0
    assert result.stdout == "%s: ok (job cube, queue q, mode keep_all)\n" % path
    lines = result.stderr.splitlines()
    assert lines[0].startswith("warning: %s:6: [cube_dispatcher] event_types "
                               "lists D" % path)
    assert lines[1].startswith("warning: %s:7: [cube_dispatcher] "
                               "ignore_old_events is ignored" % path)
    assert len(lines) == 2
