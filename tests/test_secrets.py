"""No password reaches a log line or an error, and names from events stay names."""

import signal
import subprocess
import sys
import time

from conftest import drain, run_job_with_one_row
from cubemux.db import mask_dsn, mask_text
from test_worker import last_suffix

CUBEMUX = [sys.executable, "-m", "cubemux"]
SECRET = "s3cr3t-Pa55"


def test_mask_dsn_key_value():
    assert mask_dsn("host=x password=%s dbname=y" % SECRET) == "host=x password=*** dbname=y"


def test_mask_dsn_quoted_value():
    masked = mask_dsn("password='%s with space' dbname=y" % SECRET)
    assert SECRET not in masked
    assert masked.endswith("dbname=y")


def test_mask_dsn_uri():
    masked = mask_dsn("postgresql://user:%s@localhost/db" % SECRET)
    assert masked == "postgresql://user:***@localhost/db"


def test_mask_text_replaces_password():
    text = mask_text("failed for %s here" % SECRET, ["password=%s" % SECRET])
    assert SECRET not in text


def test_run_logs_no_password(setup, tmp_path):
    setup.table("create table public.item (id int primary key)", "public.item")
    path = setup.job_file("job", src_db=setup.src_dsn + " password=" + SECRET,
                          dst_db=setup.dst_dsn + " password=" + SECRET)
    stderr = run_job_with_one_row(setup, path)
    assert "connected to the source database" in stderr
    assert SECRET not in stderr


def test_unreachable_database_error_masks_password(tmp_path):
    path = tmp_path / "job.ini"
    path.write_text("[cube_dispatcher]\nsrc_db = host=%s/nowhere dbname=x password=%s\n"
                    "dst_db = host=%s/nowhere dbname=y password=%s\n"
                    "pgq_queue_name = q\nmax_backoff = 1\n"
                    % (tmp_path, SECRET, tmp_path, SECRET))
    process = subprocess.Popen([*CUBEMUX, "run", "-v", str(path)], stderr=subprocess.PIPE,
                               text=True)
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert "database error" in stderr
    assert SECRET not in stderr


def test_injection_in_column_name_stays_a_name(setup):
    column = 'c"; drop table victim; --'
    quoted = column.replace('"', '""')
    setup.dst_exec("create table victim (id int)")
    setup.dst_exec('create table public.inj (id int primary key, "%s" text)' % quoted)
    worker = setup.worker(mode="keep_latest")
    worker.start()
    data = "id=1&c%22%3b+drop+table+victim%3b+--=v"
    setup.src_exec("select pgq.insert_event(%s, 'I:id', %s, 'public.inj', null, null,"
                   " null)", (setup.queue, data))
    setup.tick()
    drain(worker)
    rows = setup.dst_query('select id, "%s" from public."inj_%s"'
                           % (quoted, last_suffix(setup)))
    assert rows == [(1, "v")]
    assert setup.dst_query("select count(*) from pg_tables where tablename = 'victim'"
                           ) == [(1,)]


def test_mask_dsn_escaped_space():
    masked = mask_dsn(r"host=x password=Tail\ %s dbname=y" % SECRET)
    assert SECRET not in masked
    assert masked == "host=x password=*** dbname=y"
