"""Exactly once: the tick and the rows commit together, and batches are never repeated."""

import subprocess
import sys

import pytest

from conftest import drain
from cubemux import pgq, tracking
from cubemux.errors import LostPosition
from test_worker import item_table, last_suffix, rows_of

CUBEMUX = [sys.executable, "-m", "cubemux"]


class Crash(Exception):
    pass


def test_crash_before_finish_skips_batch(setup, monkeypatch):
    item_table(setup)
    worker = setup.worker(mode="keep_all")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()

    def crash(conn, batch_id):
        raise Crash()

    monkeypatch.setattr(pgq, "finish_batch", crash)
    with pytest.raises(Crash):
        worker.run_once()
    monkeypatch.undo()
    worker.close()

    table = 'public."item_%s"' % last_suffix(setup)
    assert len(rows_of(setup, table)) == 1
    restarted = setup.worker(mode="keep_all")
    restarted.start()
    assert drain(restarted) == 1
    assert len(rows_of(setup, table)) == 1
    (tick,) = setup.src_query("select last_tick from pgq.get_consumer_info(%s, 'job')",
                              (setup.queue,))[0]
    assert tracking.get_last_tick(setup.dst, "job") == tick


def test_crash_before_commit_applies_once(setup, monkeypatch):
    item_table(setup)
    worker = setup.worker(mode="keep_all")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1), (2, 'b', 2)")
    setup.tick()

    def crash(conn, consumer, tick_id):
        raise Crash()

    monkeypatch.setattr(tracking, "set_last_tick", crash)
    with pytest.raises(Crash):
        worker.run_once()
    monkeypatch.undo()
    worker.close()

    table = 'public."item_%s"' % last_suffix(setup)
    assert rows_of(setup, table) == []
    restarted = setup.worker(mode="keep_all")
    restarted.start()
    drain(restarted)
    assert [row[0] for row in rows_of(setup, table)] == [1, 2]


def test_killed_process_mid_batch_applies_once(setup, tmp_path):
    """A worker killed with SIGKILL in the middle of a batch leaves nothing of it."""
    item_table(setup)
    worker = setup.worker(mode="keep_all")
    worker.start()
    worker.close()
    setup.src_exec("insert into item select g, 'x', g from generate_series(1, 20000) g")
    setup.tick()
    path = setup.job_file("job", mode="keep_all")
    process = subprocess.Popen([*CUBEMUX, "run", path, "-q"])
    table = 'public."item_%s"' % last_suffix(setup)
    try:
        # Kill once the batch is open and loading.
        for _ in range(400):
            busy = setup.src_query(
                "select count(*) from pgq.get_consumer_info(%s, 'job')"
                " where current_batch is not null", (setup.queue,))[0][0]
            if busy:
                break
            subprocess.run(["sleep", "0.01"])
        process.kill()
    finally:
        process.wait(10)

    restarted = setup.worker(mode="keep_all")
    restarted.start()
    drain(restarted)
    assert setup.dst_query("select count(*), count(distinct id) from %s" % table) == [
        (20000, 20000)]


def test_lost_position_stops_with_remedy(setup):
    item_table(setup)
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    tracking.set_last_tick(setup.dst, "job", 999999)
    with pytest.raises(LostPosition) as caught:
        worker.run_once()
    message = str(caught.value)
    assert "999999" in message
    assert "cubemux rewind" in message
    assert "cubemux reset" in message


def test_rewind_moves_queue_to_destination(setup):
    item_table(setup)
    worker = setup.worker(mode="keep_all")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    drain(worker)
    applied_tick = tracking.get_last_tick(setup.dst, "job")
    setup.src_exec("insert into item values (2, 'b', 2)")
    setup.tick()
    setup.src_exec("insert into item values (3, 'c', 3)")
    setup.tick()
    # The queue moves on without the destination, as after a restore.
    batch = pgq.next_batch(setup.src, setup.queue, "job", "")
    pgq.finish_batch(setup.src, batch.batch_id)
    with pytest.raises(LostPosition):
        drain(worker)
    worker.close()

    path = setup.job_file("job", mode="keep_all")
    result = subprocess.run([*CUBEMUX, "rewind", path], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert str(applied_tick) in result.stdout

    restarted = setup.worker(mode="keep_all")
    restarted.start()
    drain(restarted)
    table = 'public."item_%s"' % last_suffix(setup)
    assert [row[0] for row in rows_of(setup, table)] == [1, 2, 3]


def test_reset_clears_destination_tick(setup):
    item_table(setup)
    worker = setup.worker(mode="keep_all")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    tracking.set_last_tick(setup.dst, "job", 999999)
    worker.close()
    path = setup.job_file("job", mode="keep_all")
    result = subprocess.run([*CUBEMUX, "reset", path], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert tracking.get_last_tick(setup.dst, "job") is None

    restarted = setup.worker(mode="keep_all")
    restarted.start()
    drain(restarted)
    assert len(rows_of(setup, 'public."item_%s"' % last_suffix(setup))) == 1


def test_new_registration_resets_destination(setup):
    worker = setup.worker()
    tracking.install_schema(setup.dst)
    tracking.set_last_tick(setup.dst, "job", 424242)
    worker.start()
    assert tracking.get_last_tick(setup.dst, "job") is None


def test_existing_registration_keeps_destination(setup):
    worker = setup.worker()
    worker.start()
    tracking.set_last_tick(setup.dst, "job", 424242)
    worker.close()
    again = setup.worker()
    again.start()
    assert tracking.get_last_tick(setup.dst, "job") == 424242


def test_rewind_refused_while_job_runs(setup):
    worker = setup.worker(mode="keep_all")
    worker.start()
    worker.run_once()
    path = setup.job_file("job", mode="keep_all")
    for command in ("rewind", "reset", "unregister"):
        result = subprocess.run([*CUBEMUX, command, path], capture_output=True,
                                text=True)
        assert result.returncode != 0
        assert "job job is running" in result.stderr
    worker.close()


def test_unregister_removes_consumer(setup):
    worker = setup.worker(mode="keep_all")
    worker.start()
    tracking.set_last_tick(setup.dst, "job", 5)
    worker.close()
    path = setup.job_file("job", mode="keep_all")
    result = subprocess.run([*CUBEMUX, "unregister", path], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    consumers = setup.src_query("select count(*) from pgq.get_consumer_info(%s)"
                                " where consumer_name = 'job'", (setup.queue,))
    assert consumers == [(0,)]
    assert tracking.get_last_tick(setup.dst, "job") is None
