"""Reading a batch's events through pgq.iter_events on real pgq."""

import psycopg2
import pytest

from cubemux import pgq


def _batch_of(setup, count):
    """Write COUNT events into the queue and open a batch of them."""
    setup.src_exec("select pgq.register_consumer(%s, 'reader')", (setup.queue,))
    setup.src_exec(
        "select pgq.insert_event(%s, 'I:id', 'id=' || g, 'public.t', null, null,"
        " null) from generate_series(1, %s) g", (setup.queue, count))
    setup.tick()
    conn = psycopg2.connect(setup.src_dsn)
    batch = pgq.next_batch(conn, setup.queue, "reader", "")
    assert batch is not None
    return conn, batch


def test_iter_events_yields_every_event(setup):
    conn, batch = _batch_of(setup, 1234)
    rows = list(pgq.iter_events(conn, batch.batch_id, fetch_size=100))
    conn.close()

    assert len(rows) == 1234
    assert sorted(row[3] for row in rows) == sorted("id=%d" % n for n in range(1, 1235))
    assert all(len(row) == 6 for row in rows)


def test_iter_events_ordered_by_ev_id(setup):
    conn, batch = _batch_of(setup, 500)
    ev_ids = [row[0] for row in pgq.iter_events(conn, batch.batch_id, fetch_size=64,
                                                 ordered=True)]
    conn.close()

    assert ev_ids == sorted(ev_ids)
    assert len(ev_ids) == 500


def test_iter_events_closed_then_rolled_back(setup):
    conn, batch = _batch_of(setup, 1000)
    events = pgq.iter_events(conn, batch.batch_id, fetch_size=10)
    with pytest.raises(RuntimeError):
        for number, _row in enumerate(events):
            if number == 15:
                raise RuntimeError("the caller failed")
    events.close()
    conn.rollback()

    with conn.cursor() as cur:
        cur.execute("select 1")
        assert cur.fetchone() == (1,)
    conn.close()
