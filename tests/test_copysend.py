"""COPY statements sent by the writer's thread: failures, set-asides and aborts.

The writer flushes every few events here, so that one batch is many COPY
statements and a failure lands while later ones wait in the thread's queue.
"""

import threading
import time

import psycopg2
import psycopg2.errors
import pytest

from conftest import drain, record_counts
from masterproc import wait_for
from cubemux import apply, copysend, tracking
from cubemux.errors import CubemuxError
from test_worker import last_suffix, rows_of

EVENTS = 600


@pytest.fixture(autouse=True)
def small_flushes(monkeypatch):
    monkeypatch.setattr(apply, "FLUSH_EVENTS", 40)
    monkeypatch.setattr(copysend, "QUEUE_DEPTH", 2)


def send_many(setup, count=EVENTS, bad=(), bad_data="id=abc&v=x"):
    """Queue COUNT inserts of public.good; the ids in BAD get BAD_DATA instead.

    Return {id: ev_id} of the bad ones.
    """
    rows = setup.src_query(
        "select g, pgq.insert_event(%s, 'I:id',"
        " case when g = any(%s) then %s else 'id=' || g || '&v=v' || g end,"
        " 'public.good', null, null, null)"
        " from generate_series(1, %s) g order by g",
        (setup.queue, list(bad), bad_data, count))
    setup.tick()
    return {number: ev_id for number, ev_id in rows if number in bad}


def partition(setup):
    return 'public."good_%s"' % last_suffix(setup)


@pytest.mark.parametrize("mode", ["keep_all", "keep_latest"])
def test_later_copy_reject_names_event(setup, mode):
    setup.dst_exec("create table public.good (id int primary key, v text)")
    worker = setup.worker(mode=mode)
    worker.start()
    bad = send_many(setup, bad=[437])
    for _ in range(2):
        # The second run proves the rollback left the connection usable.
        with pytest.raises(CubemuxError) as caught:
            worker.run_once()
        assert "event %d" % bad[437] in str(caught.value)
        assert "integer" in str(caught.value)
    assert rows_of(setup, partition(setup)) == []
    assert tracking.get_last_tick(setup.dst, "job") is None
    worker.close()


@pytest.mark.parametrize("mode", ["keep_all", "keep_latest"])
def test_rejects_in_several_copies_set_aside(setup, mode):
    setup.dst_exec("create table public.good (id int primary key, v text)")
    worker = setup.worker(mode=mode, on_error="deadletter")
    worker.start()
    bad = send_many(setup, bad=[3, 41, 42, 300, 599])
    assert drain(worker) == 1
    worker.close()

    rows = rows_of(setup, partition(setup))
    assert [row[0] for row in rows] == [n for n in range(1, EVENTS + 1)
                                        if n not in bad]
    stored = setup.dst_query("select ev_id from cubemux.deadletter order by 1")
    assert [row[0] for row in stored] == sorted(bad.values())
    assert tracking.get_last_tick(setup.dst, "job") is not None


def test_decode_error_rolls_back_copies(setup):
    setup.dst_exec("create table public.good (id int primary key, v text)")
    worker = setup.worker(mode="keep_latest")
    worker.start()
    bad = send_many(setup, bad=[550], bad_data="id=550&v=%zz")
    with pytest.raises(CubemuxError) as caught:
        worker.run_once()
    assert "event %d" % bad[550] in str(caught.value)
    assert "url-encoding" in str(caught.value)
    assert rows_of(setup, partition(setup)) == []
    # Nothing of the abandoned COPY statements is left on the connection.
    assert setup.dst_query("select count(*) from pg_stat_activity"
                           " where state = 'idle in transaction (aborted)'") == [(0,)]
    worker.close()


def test_counts_of_set_aside_rows(setup):
    setup.dst_exec("create table public.good (id int primary key, v text)")
    worker = setup.worker(mode="keep_all", on_error="deadletter")
    worker.start()
    send_many(setup, bad=[10, 20, 500])
    counted = record_counts(worker)
    drain(worker)
    worker.close()
    assert counted[0].inserted == {"public.good": EVENTS - 3}
    assert counted[0].dead_letters == 3


def _sender_setup(setup):
    setup.dst_exec("create table public.sink (id int primary key)")
    conn = psycopg2.connect(setup.dst_dsn)
    return conn, copysend.CopySender(conn)


def _job(text):
    return copysend.CopyJob("copy public.sink (id) from stdin", text, [], None, None)


def test_sender_stops_after_failure(setup):
    conn, sender = _sender_setup(setup)
    sender.send(_job("1\n2\n"))
    failing = _job("3\nthree\n")
    sender.send(failing)
    later = [_job("4\n"), _job("5\n")]
    for job in later:
        sender.send(job)
    job, error, unsent = sender.drain()
    assert job is failing
    assert isinstance(error, psycopg2.DataError)
    assert unsent == later
    sender.close()
    conn.rollback()
    conn.close()


def test_sender_abort_ends_running_copy(setup):
    conn, sender = _sender_setup(setup)
    # Holding the table's lock in another session makes the COPY wait, so
    # the abort has to end a COPY that is still running.
    blocker = psycopg2.connect(setup.dst_dsn)
    blocker.cursor().execute("lock table public.sink")
    sender.send(_job("".join("%d\n" % n for n in range(200000))))
    wait_for(lambda: setup.dst_query(
        "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
        " and query like 'copy public.sink%%'")[0][0] == 1, 30,
        "the COPY to wait for the lock")
    closer = threading.Thread(target=sender.close, kwargs={"abort": True})
    closer.start()
    while not sender.aborted.is_set():
        time.sleep(0.01)
    blocker.rollback()
    closer.join(timeout=30)
    assert not closer.is_alive()
    # psycopg2 ends the COPY with the text of the error that read() raised.
    error = sender.failure[1]
    assert isinstance(error, psycopg2.errors.QueryCanceled)
    assert "abandoned" in str(error)
    blocker.close()
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute("select count(*) from public.sink")
        assert cur.fetchone() == (0,)
    conn.close()
