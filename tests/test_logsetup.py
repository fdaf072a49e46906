"""Logging: the job name on every line, rotation by size, skylog.ini."""

import logging
import os
import subprocess
import sys

from conftest import run_job_with_one_row
from cubemux import logsetup


def test_logfile_rotates_at_size(tmp_path):
    path = tmp_path / "log" / "job.log"
    logsetup.setup("rotating_job", 0, str(path), log_size=2000, log_count=2)
    try:
        for number in range(200):
            logging.getLogger("cubemux.test").info("line %d of the rotation test", number)
    finally:
        logsetup.setup("master", 0)
    names = sorted(os.listdir(path.parent))
    assert names == ["job.log", "job.log.1", "job.log.2"]
    for name in names:
        lines = (path.parent / name).read_text().splitlines()
        assert lines
        assert all(" rotating_job: " in line for line in lines)
        assert os.path.getsize(path.parent / name) <= 2000


def test_skylog_file_configures_logging(tmp_path):
    log_path = tmp_path / "sky.log"
    (tmp_path / "skylog.ini").write_text(
        "[loggers]\nkeys=root\n\n[handlers]\nkeys=file\n\n[formatters]\nkeys=plain\n\n"
        "[logger_root]\nlevel=INFO\nhandlers=file\n\n"
        "[handler_file]\nclass=FileHandler\nformatter=plain\nargs=(%r,)\n\n"
        "[formatter_plain]\nformat=SKY %%(job)s %%(message)s\n" % str(log_path))
    code = ("from cubemux import logsetup; import logging;"
            "logsetup.setup('sky_job', 0, None, use_skylog=True);"
            "logging.getLogger('x').info('hello from skylog')")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    assert log_path.read_text().strip() == "SKY sky_job hello from skylog"


def test_run_names_job_on_every_line(setup, tmp_path):
    setup.table("create table public.item (id int primary key)", "public.item")
    path = setup.job_file("named_job", mode="keep_latest")
    stderr = run_job_with_one_row(setup, path)
    lines = stderr.splitlines()
    assert any("applied batch" in line for line in lines)
    assert all(" named_job: " in line for line in lines), stderr
