"""The pgq_ext tracking schema: install, reuse of skytools' installations."""

import subprocess
import sys

from conftest import drain
from cubemux import tracking
from test_worker import item_table, last_suffix, rows_of

CUBEMUX = [sys.executable, "-m", "cubemux"]

# The layout skytools 2 installed: one row per consumer, no subconsumer.
SKYTOOLS2_SCHEMA = """
create schema pgq_ext;
create table pgq_ext.completed_tick (
    consumer_id text not null,
    last_tick_id bigint not null,
    primary key (consumer_id));
create function pgq_ext.get_last_tick(a_consumer text) returns int8 as $$
    select last_tick_id from pgq_ext.completed_tick where consumer_id = a_consumer
$$ language sql;
create function pgq_ext.set_last_tick(a_consumer text, a_tick_id bigint)
returns integer as $$
begin
    if a_tick_id is null then
        delete from pgq_ext.completed_tick where consumer_id = a_consumer;
    else
        update pgq_ext.completed_tick set last_tick_id = a_tick_id
         where consumer_id = a_consumer;
        if not found then
            insert into pgq_ext.completed_tick (consumer_id, last_tick_id)
            values (a_consumer, a_tick_id);
        end if;
    end if;
    return 1;
end;
$$ language plpgsql;
"""


def init_dst(setup):
    path = setup.job_file("job")
    return subprocess.run([*CUBEMUX, "init-dst", path], capture_output=True, text=True)


def test_init_dst_installs_schema(setup):
    result = init_dst(setup)
    assert result.returncode == 0, result.stderr
    assert tracking.schema_installed(setup.dst)
    tracking.set_last_tick(setup.dst, "c", 5)
    assert tracking.get_last_tick(setup.dst, "c") == 5
    tracking.set_last_tick(setup.dst, "c", 7)
    assert tracking.get_last_tick(setup.dst, "c") == 7
    tracking.set_last_tick(setup.dst, "c", None)
    assert tracking.get_last_tick(setup.dst, "c") is None


def test_init_dst_is_idempotent(setup):
    assert init_dst(setup).returncode == 0
    tracking.set_last_tick(setup.dst, "c", 5)
    second = init_dst(setup)
    assert second.returncode == 0, second.stderr
    assert tracking.get_last_tick(setup.dst, "c") == 5


def test_init_dst_keeps_skytools2_schema(setup):
    setup.dst_exec(SKYTOOLS2_SCHEMA)
    setup.dst_exec("insert into pgq_ext.completed_tick values ('old', 11)")
    result = init_dst(setup)
    assert result.returncode == 0, result.stderr
    columns = setup.dst_query(
        "select column_name from information_schema.columns where table_schema ="
        " 'pgq_ext' and table_name = 'completed_tick' order by 1")
    assert columns == [("consumer_id",), ("last_tick_id",)]
    assert tracking.get_last_tick(setup.dst, "old") == 11


def test_worker_runs_on_skytools2_schema(setup):
    setup.dst_exec(SKYTOOLS2_SCHEMA)
    item_table(setup)
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    drain(worker)
    assert rows_of(setup, 'public."item_%s"' % last_suffix(setup)) == [(1, "a", 1)]
    (tick,) = setup.dst_query("select last_tick_id from pgq_ext.completed_tick"
                              " where consumer_id = 'job'")[0]
    (queue_tick,) = setup.src_query(
        "select last_tick from pgq.get_consumer_info(%s, 'job')", (setup.queue,))[0]
    assert tick == queue_tick


def test_init_dst_bad_connection_masks_password(setup):
    path = setup.job_file("job", dst_db="host=/nonexistent-socket-dir dbname=x"
                          " password=hunter2")
    result = subprocess.run([*CUBEMUX, "init-dst", path], capture_output=True, text=True)
    assert result.returncode != 0
    assert "hunter2" not in result.stderr
    assert "cannot connect to the destination" in result.stderr
