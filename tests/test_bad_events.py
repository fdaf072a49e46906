"""Bad events: stop the job by default, or set them aside with on_error = deadletter."""

import subprocess
import sys

import pytest

from conftest import drain
from cubemux import tracking
from cubemux.errors import EXIT_BAD_EVENT, CubemuxError, EventError
from test_worker import last_suffix, rows_of

CUBEMUX = [sys.executable, "-m", "cubemux"]

# (name, ev_type, ev_data, ev_extra1, words of the expected reason)
BAD_EVENTS = [
    ("url-encoding", "I:id", "id=3&v=%zz", "public.good", "url-encoding"),
    ("utf-8", "I:id", "id=3&v=%ff%fe", "public.good", "UTF-8"),
    ("operation", "X:id", "id=3&v=a", "public.good", "event type"),
    ("key-value", "U:id", "v=a", "public.good", "primary key"),
    ("no-parent", "I:id", "id=3&v=a", "public.missing", "does not exist"),
    ("column", "I:id", "id=3&v=a&nope=1", "public.good", "nope"),
    ("type", "I:id", "id=abc&v=a", "public.good", "integer"),
]


def prepare(setup):
    setup.dst_exec("create table public.good (id int primary key, v text)")


def send(setup, ev_type, data, table):
    (ev_id,) = setup.src_query(
        "select pgq.insert_event(%s, %s, %s, %s, null, null, null)",
        (setup.queue, ev_type, data, table))[0]
    return ev_id


def send_batch(setup, bad):
    send(setup, "I:id", "id=1&v=before", "public.good")
    bad_id = send(setup, *bad[1:4])
    send(setup, "I:id", "id=2&v=after", "public.good")
    setup.tick()
    return bad_id


@pytest.mark.parametrize("bad", BAD_EVENTS, ids=[case[0] for case in BAD_EVENTS])
def test_bad_event_stops_batch(setup, bad):
    prepare(setup)
    worker = setup.worker(mode="keep_latest")
    worker.start()
    bad_id = send_batch(setup, bad)
    with pytest.raises(CubemuxError) as caught:
        worker.run_once()
    message = str(caught.value)
    assert "event %d" % bad_id in message
    assert bad[4].lower() in message.lower()
    assert bad[3] in message or "table" in message
    partitions = setup.dst_query("select count(*) from pg_tables where tablename like"
                                 " 'good\\_%'")[0][0]
    if partitions:
        assert rows_of(setup, 'public."good_%s"' % last_suffix(setup)) == []
    assert tracking.get_last_tick(setup.dst, "job") is None
    worker.close()


@pytest.mark.parametrize("bad", BAD_EVENTS, ids=[case[0] for case in BAD_EVENTS])
def test_bad_event_goes_to_deadletter(setup, bad):
    prepare(setup)
    worker = setup.worker(mode="keep_latest", on_error="deadletter")
    worker.start()
    bad_id = send_batch(setup, bad)
    assert drain(worker) == 1
    worker.close()

    rows = rows_of(setup, 'public."good_%s"' % last_suffix(setup))
    assert rows == [(1, "before"), (2, "after")]
    stored = setup.dst_query("select ev_id, ev_type, ev_data, ev_extra1, reason"
                             " from cubemux.deadletter")
    assert len(stored) == 1
    assert stored[0][:4] == (bad_id, *bad[1:4])
    assert bad[4].lower() in stored[0][4].lower()
    (queue_tick,) = setup.src_query(
        "select last_tick from pgq.get_consumer_info(%s, 'job')", (setup.queue,))[0]
    assert tracking.get_last_tick(setup.dst, "job") == queue_tick


def test_deadletter_list_and_replay(setup):
    prepare(setup)
    path = setup.job_file("job", mode="keep_latest", on_error="deadletter")
    worker = setup.worker(mode="keep_latest", on_error="deadletter")
    worker.start()
    bad_id = send(setup, "I:id", "id=7&v=a&extra=x", "public.good")
    setup.tick()
    drain(worker)
    worker.close()

    listed = subprocess.run([*CUBEMUX, "deadletter", path], capture_output=True,
                            text=True)
    assert listed.returncode == 0, listed.stderr
    assert "event %d" % bad_id in listed.stdout
    assert "extra" in listed.stdout

    failed = subprocess.run([*CUBEMUX, "replay", path], capture_output=True, text=True)
    assert failed.returncode != 0
    assert "extra" in failed.stderr

    setup.dst_exec("alter table public.good add column extra text")
    setup.dst_exec('alter table public."good_%s" add column extra text'
                   % last_suffix(setup))
    # An event id is not a dead-letter id.
    wrong = subprocess.run([*CUBEMUX, "replay", path, "--id", str(bad_id + 1000)],
                           capture_output=True, text=True)
    assert wrong.returncode != 0
    assert "no pending dead letter of this job has id %d" % (bad_id + 1000) in (
        wrong.stderr)
    replayed = subprocess.run([*CUBEMUX, "replay", path], capture_output=True,
                              text=True)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed dead letters: 1" in replayed.stdout
    assert rows_of(setup, 'public."good_%s"' % last_suffix(setup)) == [(7, "a", "x")]
    pending = subprocess.run([*CUBEMUX, "deadletter", path], capture_output=True,
                             text=True)
    assert "event %d" % bad_id not in pending.stdout


def test_deadletter_keep_all_rejected_rows(setup):
    setup.dst_exec("create table public.good (id int, v text check (v <> 'bad'))")
    worker = setup.worker(mode="keep_all", on_error="deadletter",
                          part_template="create table _DEST_TABLE (like _PARENT"
                          " including all)")
    worker.start()
    send(setup, "I:id", "id=1&v=ok", "public.good")
    bad_id = send(setup, "I:id", "id=2&v=bad", "public.good")
    send(setup, "I:id", "id=x&v=ok", "public.good")
    send(setup, "I:id", "id=3&v=ok", "public.good")
    setup.tick()
    drain(worker)
    worker.close()
    assert rows_of(setup, 'public."good_%s"' % last_suffix(setup)) == [
        (1, "ok"), (3, "ok")]
    stored = setup.dst_query("select ev_id from cubemux.deadletter order by 1")
    assert len(stored) == 2
    assert stored[0][0] == bad_id


def test_deadletter_keep_latest_insert_rejects(setup):
    setup.dst_exec("create table public.good (id int primary key,"
                   " v text check (v <> 'bad'))")
    worker = setup.worker(mode="keep_latest", on_error="deadletter",
                          part_template="create table _DEST_TABLE (like _PARENT"
                          " including all)")
    worker.start()
    send(setup, "I:id", "id=1&v=ok", "public.good")
    bad_id = send(setup, "U:id", "id=1&v=bad", "public.good")
    send(setup, "I:id", "id=2&v=ok", "public.good")
    setup.tick()
    drain(worker)
    worker.close()
    assert rows_of(setup, 'public."good_%s"' % last_suffix(setup)) == [(2, "ok")]
    stored = setup.dst_query("select ev_id from cubemux.deadletter")
    assert stored == [(bad_id,)]


def test_replay_refuses_newer_row(setup):
    prepare(setup)
    path = setup.job_file("job", mode="keep_latest", on_error="deadletter")
    worker = setup.worker(mode="keep_latest", on_error="deadletter")
    worker.start()
    send(setup, "I:id", "id=7&v=old&extra=x", "public.good")
    setup.tick()
    drain(worker)
    send(setup, "U:id", "id=7&v=newer", "public.good")
    setup.tick()
    drain(worker)
    worker.close()
    setup.dst_exec("alter table public.good add column extra text")
    partition = 'public."good_%s"' % last_suffix(setup)
    setup.dst_exec("alter table %s add column extra text" % partition)

    refused = subprocess.run([*CUBEMUX, "replay", path], capture_output=True, text=True)
    assert refused.returncode != 0
    assert "--force" in refused.stderr
    assert rows_of(setup, partition) == [(7, "newer", None)]

    forced = subprocess.run([*CUBEMUX, "replay", "--force", path], capture_output=True,
                            text=True)
    assert forced.returncode == 0, forced.stderr
    assert rows_of(setup, partition) == [(7, "old", "x")]


@pytest.mark.parametrize("bad", [1, 137, 200])
def test_keep_latest_insert_reject_names_event(setup, bad):
    # The stage table lacks the partition's NOT NULL, so the row gets past
    # COPY and fails only at the final INSERT.
    setup.dst_exec("create table public.good (id int primary key, v text not null)")
    worker = setup.worker(mode="keep_latest",
                          part_template="create table _DEST_TABLE (like _PARENT"
                          " including all)")
    worker.start()
    rows = setup.src_query(
        "select g, pgq.insert_event(%s, 'I:id', case when g = %s then 'id=' || g || '&v'"
        " else 'id=' || g || '&v=x' end, 'public.good', null, null, null)"
        " from generate_series(1, 200) g order by g", (setup.queue, bad))
    bad_id = dict(rows)[bad]
    setup.tick()
    with pytest.raises(EventError) as caught:
        worker.run_once()
    worker.close()
    assert caught.value.ev_id == bad_id
    assert "event %d" % bad_id in str(caught.value)
    assert "null value" in str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_EVENT
