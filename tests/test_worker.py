"""End-to-end runs of the consumer loop on real PostgreSQL and pgq."""

import threading
import time

import psycopg2
import pytest

from conftest import drain
from cubemux import pgq, replay, tracking
from cubemux.config import load_job
from cubemux.errors import EventError, LostPosition, PartitionError


def last_suffix(setup, fmt="YYYY_MM_DD", zone=None):
    """Return to_char of the newest tick's time, as the worker formats it."""
    if zone:
        return setup.src_query(
            "select to_char(tick_time at time zone %s, %s) from pgq.tick"
            " order by tick_id desc limit 1", (zone, fmt))[0][0]
    return setup.src_query("select to_char(tick_time, %s) from pgq.tick"
                           " order by tick_id desc limit 1", (fmt,))[0][0]


def item_table(setup):
    setup.table("create table public.item (id int primary key, name text, price numeric)",
                "public.item")


def rows_of(setup, table):
    return setup.dst_query("select * from %s order by 1" % table)


def test_keep_latest_applies_inserts_updates_deletes(setup):
    item_table(setup)
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1.5), (2, 'b', null), (3, 'c', 3)")
    setup.src_exec("update item set name = 'a2' where id = 1")
    setup.src_exec("delete from item where id = 3")
    setup.tick()
    assert drain(worker) == 1

    rows = rows_of(setup, 'public."item_%s"' % last_suffix(setup))
    assert [row[:2] for row in rows] == [(1, "a2"), (2, "b")]
    assert rows[1][2] is None


def test_keep_latest_replaces_version_across_batches(setup):
    item_table(setup)
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1), (2, 'b', 2)")
    setup.tick()
    drain(worker)
    setup.src_exec("update item set name = 'a2' where id = 1")
    setup.src_exec("delete from item where id = 2")
    setup.src_exec("insert into item values (2, 'b2', 2)")
    setup.tick()
    drain(worker)

    suffix = last_suffix(setup)
    rows = rows_of(setup, 'public."item_%s"' % suffix)
    assert [row[:2] for row in rows] == [(1, "a2"), (2, "b2")]


def test_keep_all_keeps_every_version(setup):
    item_table(setup)
    worker = setup.worker(mode="keep_all")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.src_exec("update item set name = 'a2' where id = 1")
    setup.src_exec("update item set name = 'a3' where id = 1")
    setup.tick()
    drain(worker)

    rows = rows_of(setup, 'public."item_%s"' % last_suffix(setup))
    assert sorted(row[1] for row in rows) == ["a", "a2", "a3"]


def test_keep_all_delete_stops_batch(setup):
    item_table(setup)
    worker = setup.worker(mode="keep_all")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.src_exec("delete from item where id = 1")
    setup.tick()
    with pytest.raises(EventError) as caught:
        worker.run_once()

    message = str(caught.value)
    assert "mode = keep_latest" in message
    assert "public.item" in message
    assert "event %d" % caught.value.ev_id in message
    assert setup.dst_query("select count(*) from pg_tables where tablename like 'item_%'"
                           " and tablename <> 'item'")[0][0] in (0, 1)
    assert tracking.get_last_tick(setup.dst, "job") is None
    with pytest.raises(EventError):
        worker.run_once()


def test_keep_latest_without_key_stops(setup):
    setup.table("create table public.nokey (a int, b text)", "public.nokey")
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec("insert into nokey values (1, 'x')")
    setup.tick()
    with pytest.raises(EventError) as caught:
        worker.run_once()
    assert "mode = keep_all" in str(caught.value)
    assert "public.nokey" in str(caught.value)


def test_keep_all_without_key(setup):
    setup.table("create table public.nokey (a int, b text)", "public.nokey")
    worker = setup.worker(mode="keep_all")
    worker.start()
    setup.src_exec("insert into nokey values (1, 'x'), (1, 'x')")
    setup.tick()
    drain(worker)
    assert rows_of(setup, 'public."nokey_%s"' % last_suffix(setup)) == [(1, "x"), (1, "x")]


SPECIAL_VALUES = [
    "a&b=c", "100% sure", "1+1 = 2", "  spaced  ", "tab\there", "new\nline",
    "back\\slash", "ünïcödé ✓ 日本", "", None, "-dash-", "%2d", "'quote\"",
]


@pytest.mark.parametrize("mode", ["keep_all", "keep_latest"])
def test_special_values_round_trip(setup, mode):
    setup.table('create table "Odd Schema Tab" ("Id Key" int primary key, "Value Col" text)',
                '"Odd Schema Tab"')
    worker = setup.worker(mode=mode)
    worker.start()
    for number, value in enumerate(SPECIAL_VALUES):
        setup.src_exec('insert into "Odd Schema Tab" values (%s, %s)', (number, value))
    setup.tick()
    drain(worker)

    table = 'public."Odd Schema Tab_%s"' % last_suffix(setup)
    rows = setup.dst_query('select "Id Key", "Value Col" from %s order by 1' % table)
    assert [row[1] for row in rows] == SPECIAL_VALUES


def test_types_round_trip(setup):
    ddl = ("create table public.typed (id int primary key, ts timestamptz, d date,"
           " flag boolean, amount numeric(10,2), tags text[], doc jsonb, raw bytea,"
           " span interval)")
    setup.table(ddl, "public.typed")
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec(
        "insert into typed values (1, '2024-02-29 23:59:59.5+02', '2024-01-01', true,"
        " 12.34, '{\"a b\",NULL,c}', '{\"k\": [1, \"x&y\"]}', '\\x00ff10', '2 days')")
    setup.tick()
    drain(worker)

    source = setup.src_query("select t::text from typed t")
    target = setup.dst_query('select t::text from public."typed_%s" t'
                             % last_suffix(setup))
    assert target == source


def test_absent_column_gets_default(setup):
    setup.src_exec("create table public.dflt (id int primary key, note text, seen text)")
    setup.dst_exec("create table public.dflt (id int primary key, note text,"
                   " seen text default 'dst-default')")
    setup.src_exec("create trigger t after insert on public.dflt for each row"
                   " execute procedure pgq.logutriga(%s, 'ignore=seen')", (setup.queue,))
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec("insert into dflt values (1, 'n', 'src')")
    setup.tick()
    drain(worker)
    rows = rows_of(setup, 'public."dflt_%s"' % last_suffix(setup))
    assert rows == [(1, "n", "dst-default")]


def test_mixed_column_sets_keep_latest(setup):
    setup.dst_exec("create table public.mix (id int primary key, a text, b text default 'B')")
    worker = setup.worker(mode="keep_latest")
    worker.start()
    events = [
        ("I:id", "id=1&a=x&b=y"),
        ("U:id", "id=1&a=x2"),
        ("I:id", "id=2&a=p"),
        ("U:id", "id=2&a=q&b=r"),
        ("I:id", "id=3&a=z"),
        ("D:id", "id=3&a=z"),
    ]
    for ev_type, data in events:
        setup.src_exec("select pgq.insert_event(%s, %s, %s, 'public.mix', null, null, null)",
                       (setup.queue, ev_type, data))
    setup.tick()
    drain(worker)
    rows = rows_of(setup, 'public."mix_%s"' % last_suffix(setup))
    assert rows == [(1, "x2", "B"), (2, "q", "r")]


def test_old_style_type_with_keys_in_extra2(setup):
    setup.dst_exec("create table public.old (id int primary key, v text)")
    worker = setup.worker(mode="keep_latest")
    worker.start()
    for ev_type, data in (("I", "id=1&v=a"), ("U", "id=1&v=b")):
        setup.src_exec("select pgq.insert_event(%s, %s, %s, 'public.old', 'id', null, null)",
                       (setup.queue, ev_type, data))
    setup.tick()
    drain(worker)
    assert rows_of(setup, 'public."old_%s"' % last_suffix(setup)) == [(1, "b")]


def test_truncate_event_names_event(setup):
    item_table(setup)
    setup.src_exec("create trigger tr after truncate on item for each statement"
                   " execute procedure pgq.logutriga(%s)", (setup.queue,))
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec("truncate item")
    setup.tick()
    with pytest.raises(EventError) as caught:
        worker.run_once()
    assert "'R'" in str(caught.value)
    assert caught.value.ev_id is not None


def test_empty_dateformat_writes_parent(setup):
    item_table(setup)
    worker = setup.worker(mode="keep_latest", dateformat="")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    drain(worker)
    assert rows_of(setup, "public.item") == [(1, "a", 1)]
    assert setup.dst_query("select count(*) from pg_tables where tablename like 'item%'")[
        0][0] == 1


def test_missing_parent_names_table(setup):
    setup.src_exec("create table public.lonely (id int primary key)")
    setup.src_exec("create trigger t after insert on public.lonely for each row"
                   " execute procedure pgq.logutriga(%s)", (setup.queue,))
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec("insert into lonely values (1)")
    setup.tick()
    with pytest.raises(EventError) as caught:
        worker.run_once()
    assert "public.lonely does not exist" in str(caught.value)


def test_missing_column_names_column(setup):
    setup.src_exec("create table public.wide (id int primary key, extra text)")
    setup.dst_exec("create table public.wide (id int primary key)")
    setup.src_exec("create trigger t after insert on public.wide for each row"
                   " execute procedure pgq.logutriga(%s)", (setup.queue,))
    worker = setup.worker(mode="keep_all")
    worker.start()
    setup.src_exec("insert into wide values (1, 'x')")
    setup.tick()
    with pytest.raises(EventError) as caught:
        worker.run_once()
    assert "column extra does not exist" in str(caught.value)


def test_rejected_value_names_event(setup):
    setup.dst_exec("create table public.num (id int primary key, n int)")
    worker = setup.worker(mode="keep_all")
    worker.start()
    setup.src_exec("select pgq.insert_event(%s, 'I:id', 'id=1&n=5', 'public.num', null,"
                   " null, null)", (setup.queue,))
    (bad_id,) = setup.src_query(
        "select pgq.insert_event(%s, 'I:id', 'id=2&n=abc', 'public.num', null, null,"
        " null)", (setup.queue,))[0]
    setup.tick()
    with pytest.raises(EventError) as caught:
        worker.run_once()
    assert caught.value.ev_id == bad_id
    assert "abc" in str(caught.value)
    assert setup.dst_query("select count(*) from public.\"num_%s\"" % last_suffix(setup)
                           )[0][0] == 0


def test_several_partitions_in_one_run(setup):
    item_table(setup)
    fmt = "YYYY_MM_DD_HH24_MI_SS"
    worker = setup.worker(mode="keep_all", dateformat=fmt)
    worker.start()
    suffixes = []
    for number in range(3):
        setup.src_exec("insert into item values (%s, 'x', 1)", (number,))
        setup.tick()
        suffixes.append(last_suffix(setup, fmt))
        time.sleep(1.05)
    drain(worker)

    assert len(set(suffixes)) == 3
    for number, suffix in enumerate(suffixes):
        assert rows_of(setup, 'public."item_%s"' % suffix) == [(number, "x", 1)]


def test_monthly_dateformat(setup):
    item_table(setup)
    worker = setup.worker(mode="keep_latest", dateformat="YYYY_MM")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    drain(worker)
    assert rows_of(setup, 'public."item_%s"' % last_suffix(setup, "YYYY_MM")) == [
        (1, "a", 1)]


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Etc/GMT+12"])
def test_timezone_sets_partition_zone(setup, zone):
    item_table(setup)
    fmt = "YYYY_MM_DD_HH24"
    worker = setup.worker(mode="keep_latest", dateformat=fmt, timezone=zone)
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    drain(worker)

    assert worker.timezone == zone
    expected = last_suffix(setup, fmt, zone)
    assert expected != last_suffix(setup, fmt)
    assert rows_of(setup, 'public."item_%s"' % expected) == [(1, "a", 1)]


def test_invalid_timezone_is_config_error(setup):
    from cubemux.errors import ConfigError

    worker = setup.worker(timezone="Mars/Olympus")
    with pytest.raises(ConfigError) as caught:
        worker.start()
    assert "Mars/Olympus" in str(caught.value)


def test_default_timezone_is_source_server_zone(setup):
    worker = setup.worker()
    worker.start()
    assert worker.timezone == "UTC"


def test_long_partition_name_is_error(setup):
    name = "t" * 55
    setup.table("create table public.%s (id int primary key)" % name, "public.%s" % name)
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec("insert into %s values (1)" % name)
    setup.tick()
    with pytest.raises(PartitionError) as caught:
        worker.run_once()
    assert "63" in str(caught.value)
    assert setup.dst_query("select count(*) from pg_tables where tablename like 'ttt%'"
                           )[0][0] == 1


def test_template_placeholders_are_quoted(setup):
    setup.table('create table "Mixed Case" ("K 1" int, "k2" text, v text,'
                ' primary key ("K 1", k2))', '"Mixed Case"')
    template = "\n".join([
        "create table _DEST_TABLE (like _PARENT);",
        "alter table only _DEST_TABLE add primary key (_PKEY);",
        "create index _SCHEMA_TABLE on _DEST_TABLE (v);",
        "comment on table _DEST_TABLE is 'child of _PARENT'",
    ])
    worker = setup.worker(mode="keep_latest", part_template=template)
    worker.start()
    setup.src_exec('insert into "Mixed Case" values (1, \'a\', \'x\')')
    setup.tick()
    drain(worker)

    partition = "Mixed Case_%s" % last_suffix(setup)
    index = "public_%s" % partition
    assert setup.dst_query("select count(*) from pg_indexes where indexname = %s",
                           (index,))[0][0] == 1
    keys = setup.dst_query(
        "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid"
        " and a.attnum = any(i.indkey) where i.indisprimary"
        " and i.indrelid = format('%%I.%%I', 'public', %s::text)::regclass order by 1",
        (partition,))
    assert keys == [("K 1",), ("k2",)]


def test_partition_reused_across_batches(setup):
    item_table(setup)
    worker = setup.worker(mode="keep_latest")
    worker.start()
    for number in range(3):
        setup.src_exec("insert into item values (%s, 'x', 1)", (number,))
        setup.tick()
        drain(worker)
    suffix = last_suffix(setup)
    assert len(rows_of(setup, 'public."item_%s"' % suffix)) == 3


def test_same_cluster_source_and_destination(same_cluster_setup):
    setup = same_cluster_setup
    setup.src_exec("create table public.item (id int primary key, name text, price"
                   " numeric)")
    setup.dst_exec("create schema if not exists public")
    setup.dst_exec("create table if not exists public.item (id int primary key,"
                   " name text, price numeric)")
    setup.src_exec("create trigger t after insert or update or delete on public.item"
                   " for each row execute procedure pgq.logutriga(%s)", (setup.queue,))
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    drain(worker)
    assert rows_of(setup, 'public."item_%s"' % last_suffix(setup)) == [(1, "a", 1)]


def test_connection_lifetime_reopens(setup):
    item_table(setup)
    worker = setup.worker(connection_lifetime="0.2")
    worker.start()
    first = worker.src.get().get_backend_pid()
    time.sleep(0.3)
    worker.run_once()
    second = worker.src.get().get_backend_pid()
    assert first != second


def test_run_sleeps_and_stops(setup):
    item_table(setup)
    worker = setup.worker(loop_delay="0.2")
    worker.start()
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        setup.src_exec("insert into item values (1, 'a', 1)")
        setup.tick()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if setup.dst_query("select count(*) from pg_tables where tablename"
                               " like 'item_%'")[0][0]:
                break
            time.sleep(0.05)
    finally:
        worker.request_stop()
        thread.join(10)
    assert not thread.is_alive()
    assert rows_of(setup, 'public."item_%s"' % last_suffix(setup)) == [(1, "a", 1)]
    worker.close()


@pytest.mark.parametrize("on_error", ["stop", "deadletter"])
def test_percent_in_names_keep_latest(setup, on_error):
    # psycopg2 reads % in a statement with parameters as a placeholder.
    ddl = 'create table public."pct%t" ("id%" int primary key, "v%s" text)'
    setup.table(ddl, 'public."pct%%t"',
                dst_ddl=ddl.replace("text", "text check (\"v%s\" <> 'bad')"))
    worker = setup.worker(mode="keep_latest", on_error=on_error,
                          part_template="create table _DEST_TABLE (like _PARENT"
                          " including all)")
    worker.start()
    setup.src_exec('insert into "pct%t" values (1, \'a\'), (2, \'b\')')
    setup.src_exec('update "pct%t" set "v%s" = \'a2\' where "id%" = 1')
    if on_error == "deadletter":
        setup.src_exec('update "pct%t" set "v%s" = \'bad\' where "id%" = 2')
    setup.tick()
    assert drain(worker) == 1
    worker.close()

    rows = rows_of(setup, 'public."pct%%t_%s"' % last_suffix(setup))
    if on_error == "stop":
        assert rows == [(1, "a2"), (2, "b")]
        return
    assert rows == [(1, "a2")]
    assert len(setup.dst_query("select ev_id from cubemux.deadletter")) == 1

    # Replay checks the key of the dead letter in the partition first.
    setup.dst_exec('alter table public."pct%t" drop constraint "pct%t_v%s_check"')
    setup.dst_exec('alter table public."pct%%t_%s" drop constraint "pct%%t_v%%s_check"'
                   % last_suffix(setup))
    assert replay.replay(load_job(setup.job_file(mode="keep_latest",
                                                 on_error=on_error))) == 1
    assert rows_of(setup, 'public."pct%%t_%s"' % last_suffix(setup)) == [
        (1, "a2"), (2, "bad")]
