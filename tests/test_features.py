"""Partition modes, native partitions, retention, field mapping and schema drift."""

import datetime
import time
import zoneinfo

import pytest

from conftest import drain, record_counts
from cubemux import apply
from cubemux.errors import EventError
from test_worker import item_table, last_suffix, rows_of

NATIVE_TEMPLATE = ("create table _DEST_TABLE partition of _PARENT"
                   " for values from (_PART_START) to (_PART_END)")


def tables_like(setup, pattern):
    return [row[0] for row in setup.dst_query(
        "select tablename from pg_tables where tablename like %s order by 1", (pattern,))]


def send(setup, table, ev_type, data):
    setup.src_exec("select pgq.insert_event(%s, %s, %s, %s, null, null, null)",
                   (setup.queue, ev_type, data, table))


def events_table(setup):
    setup.table("create table public.ev (id int primary key, created timestamptz,"
                " v text)", "public.ev")


def test_event_time_splits_one_batch(setup):
    events_table(setup)
    fmt = "YYYY_MM_DD_HH24_MI_SS"
    worker = setup.worker(mode="keep_all", part_mode="event_time", dateformat=fmt,
                          timezone="UTC")
    worker.start()
    setup.src_exec("insert into ev values (1, now(), 'a')")
    time.sleep(1.1)
    setup.src_exec("insert into ev values (2, now(), 'b')")
    setup.tick()
    assert drain(worker) == 1
    names = tables_like(setup, "ev\\_%")
    assert len(names) == 2
    assert sorted(row[0] for name in names
                  for row in setup.dst_query('select id from public."%s"' % name)) == [1, 2]


def test_date_field_with_period_month(setup):
    events_table(setup)
    worker = setup.worker(mode="keep_latest", part_mode="date_field", part_field="created",
                          period="month", timezone="UTC")
    worker.start()
    setup.src_exec("insert into ev values (1, '2020-01-15 10:00+00', 'a'),"
                   " (2, '2021-06-01 00:00+00', 'b')")
    setup.tick()
    drain(worker)
    assert tables_like(setup, "ev\\_%") == ["ev_2020_01", "ev_2021_06"]
    assert [row[0] for row in rows_of(setup, "public.ev_2021_06")] == [2]


def test_date_field_uses_timezone(setup):
    events_table(setup)
    worker = setup.worker(mode="keep_all", part_mode="date_field", part_field="created",
                          period="day", timezone="Asia/Tokyo")
    worker.start()
    setup.src_exec("insert into ev values (1, '2024-01-01 23:30+00', 'a')")
    setup.tick()
    drain(worker)
    assert tables_like(setup, "ev\\_%") == ["ev_2024_01_02"]


def test_date_field_bad_value_names_event(setup):
    setup.table("create table public.dv (id int primary key, day text)", "public.dv")
    worker = setup.worker(mode="keep_all", part_mode="date_field", part_field="day",
                          period="day")
    worker.start()
    setup.src_exec("insert into dv values (1, 'not a date')")
    setup.tick()
    with pytest.raises(EventError) as caught:
        worker.run_once()
    assert "part_field day" in str(caught.value)


def test_current_time_uses_clock(setup):
    item_table(setup)
    worker = setup.worker(mode="keep_latest", part_mode="current_time", period="day",
                          timezone="UTC")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    drain(worker)
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y_%m_%d")
    assert rows_of(setup, 'public."item_%s"' % today) == [(1, "a", 1)]


@pytest.mark.parametrize("period,fmt", [("hour", "YYYY_MM_DD_HH24"),
                                        ("day", "YYYY_MM_DD"),
                                        ("month", "YYYY_MM"), ("year", "YYYY")])
def test_period_names_partition(setup, period, fmt):
    item_table(setup)
    worker = setup.worker(mode="keep_latest", period=period)
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    drain(worker)
    assert rows_of(setup, 'public."item_%s"' % last_suffix(setup, fmt)) == [(1, "a", 1)]


def native_parent(setup):
    setup.src_exec("create table public.nat (id int, created timestamptz, v text,"
                   " primary key (id, created))")
    setup.src_exec("create trigger t after insert or update or delete on public.nat"
                   " for each row execute procedure pgq.logutriga(%s)", (setup.queue,))
    setup.dst_exec("create table public.nat (id int, created timestamptz, v text,"
                   " primary key (id, created)) partition by range (created)")


def test_native_partitions_from_template(setup):
    native_parent(setup)
    worker = setup.worker(mode="keep_latest", part_mode="date_field", part_field="created",
                          period="day", timezone="UTC", part_template=NATIVE_TEMPLATE)
    worker.start()
    setup.src_exec("insert into nat values (1, '2024-03-01 10:00+00', 'a'),"
                   " (2, '2024-03-02 10:00+00', 'b'), (3, '2024-03-01 11:00+00', 'c')")
    setup.src_exec("update nat set v = 'c2' where id = 3")
    setup.tick()
    drain(worker)
    bounds = setup.dst_query(
        "select c.relname, pg_get_expr(c.relpartbound, c.oid) from pg_class c"
        " join pg_inherits i on i.inhrelid = c.oid where i.inhparent = 'nat'::regclass"
        " order by 1")
    assert [row[0] for row in bounds] == ["nat_2024_03_01", "nat_2024_03_02"]
    assert "2024-03-01 00:00:00+00" in bounds[0][1]
    assert "2024-03-02 00:00:00+00" in bounds[0][1]
    assert setup.dst_query("select id, v from nat order by id") == [
        (1, "a"), (2, "b"), (3, "c2")]




def test_pre_and_post_part_run(setup):
    item_table(setup)
    setup.dst_exec("create table part_log (name text)")
    worker = setup.worker(
        mode="keep_latest",
        pre_part="insert into part_log values ('pre')",
        post_part="comment on table _DEST_TABLE is 'made by cubemux';\n"
                  "insert into part_log values ('post')")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    drain(worker)
    partition = "item_%s" % last_suffix(setup)
    assert setup.dst_query("select name from part_log") == [("pre",), ("post",)]
    assert setup.dst_query("select obj_description(%s::regclass)", (partition,)) == [
        ("made by cubemux",)]


def _old_partitions(setup, how):
    for name in ("item_2020_01_01", "item_2020_01_02"):
        if how == "inherits":
            setup.dst_exec("create table %s () inherits (item)" % name)
        else:
            setup.dst_exec("create table %s (like item)" % name)
    setup.dst_exec("create table item_backup (like item)")
    setup.dst_exec("create table item_2020_13_45 (like item)")


def test_retention_drops_expired_partitions(setup):
    item_table(setup)
    _old_partitions(setup, "plain")
    worker = setup.worker(mode="keep_latest", retention_period="30 days")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    drain(worker)
    assert worker.enforce_retention() == 2
    assert tables_like(setup, "item%") == sorted(
        ["item", "item_2020_13_45", "item_backup", "item_%s" % last_suffix(setup)])


def test_retention_detaches_inherited_partitions(setup):
    item_table(setup)
    _old_partitions(setup, "inherits")
    worker = setup.worker(mode="keep_latest", retention_period="30 days",
                          retention_action="detach")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    drain(worker)
    assert worker.enforce_retention() == 2
    children = setup.dst_query("select count(*) from pg_inherits"
                               " where inhparent = 'item'::regclass")
    assert children == [(0,)]
    assert "item_2020_01_01" in tables_like(setup, "item%")


def test_ignore_old_events_skips_window(setup):
    events_table(setup)
    worker = setup.worker(mode="keep_all", part_mode="date_field", part_field="created",
                          period="day", timezone="UTC", retention_period="30 days",
                          ignore_old_events="1")
    worker.start()
    setup.src_exec("insert into ev values (1, '2020-01-01 10:00+00', 'old'),"
                   " (2, now(), 'new')")
    setup.tick()
    drain(worker)
    assert tables_like(setup, "ev\\_2020%") == []
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y_%m_%d")
    assert [row[2] for row in rows_of(setup, "public.ev_%s" % today)] == ["new"]


def test_fields_rename_and_keep(setup):
    setup.src_exec("create table public.src (id int primary key, a text, b text, c text)")
    setup.src_exec("create trigger t after insert or update or delete on public.src"
                   " for each row execute procedure pgq.logutriga(%s)", (setup.queue,))
    setup.dst_exec("create table public.src (id int primary key, alpha text, c text)")
    worker = setup.worker(mode="keep_latest", fields="id, a:alpha")
    worker.start()
    setup.src_exec("insert into src values (1, 'x', 'y', 'z')")
    setup.tick()
    drain(worker)
    assert rows_of(setup, 'public."src_%s"' % last_suffix(setup)) == [(1, "x", None)]


def test_skip_fields_drops_columns(setup):
    setup.src_exec("create table public.src (id int primary key, a text, secret text)")
    setup.src_exec("create trigger t after insert on public.src"
                   " for each row execute procedure pgq.logutriga(%s)", (setup.queue,))
    setup.dst_exec("create table public.src (id int primary key, a text)")
    worker = setup.worker(mode="keep_latest", skip_fields="secret")
    worker.start()
    setup.src_exec("insert into src values (1, 'x', 'pw')")
    setup.tick()
    drain(worker)
    assert rows_of(setup, 'public."src_%s"' % last_suffix(setup)) == [(1, "x")]


def test_table_map_renames_destination(setup):
    setup.src_exec("create table public.orders (id int primary key, v text)")
    setup.src_exec("create trigger t after insert on public.orders"
                   " for each row execute procedure pgq.logutriga(%s)", (setup.queue,))
    setup.dst_exec("create schema bi")
    setup.dst_exec("create table bi.orders_cube (id int primary key, v text)")
    worker = setup.worker(mode="keep_latest", table_map="public.orders:bi.orders_cube")
    worker.start()
    setup.src_exec("insert into orders values (1, 'x')")
    setup.tick()
    drain(worker)
    assert rows_of(setup, 'bi."orders_cube_%s"' % last_suffix(setup)) == [(1, "x")]


def test_event_types_skips_deletes(setup):
    item_table(setup)
    worker = setup.worker(mode="keep_all", event_types="I,U")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.src_exec("update item set name = 'b'")
    setup.src_exec("delete from item")
    setup.tick()
    drain(worker)
    assert sorted(row[1] for row in rows_of(setup, 'public."item_%s"'
                                            % last_suffix(setup))) == ["a", "b"]


def truncate_table(setup):
    item_table(setup)
    setup.src_exec("create trigger tr after truncate on item for each statement"
                   " execute procedure pgq.logutriga(%s)", (setup.queue,))


def test_on_truncate_ignore_keeps_rows(setup):
    truncate_table(setup)
    worker = setup.worker(mode="keep_latest", on_truncate="ignore")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.src_exec("truncate item")
    setup.tick()
    drain(worker)
    assert rows_of(setup, 'public."item_%s"' % last_suffix(setup)) == [(1, "a", 1)]


@pytest.mark.parametrize("mode", ["keep_latest", "keep_all"])
def test_on_truncate_empties_partition(setup, mode):
    truncate_table(setup)
    worker = setup.worker(mode=mode, on_truncate="truncate")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    drain(worker)
    setup.src_exec("insert into item values (2, 'b', 2)")
    setup.src_exec("truncate item")
    setup.src_exec("insert into item values (3, 'c', 3)")
    setup.tick()
    drain(worker)
    assert rows_of(setup, 'public."item_%s"' % last_suffix(setup)) == [(3, "c", 3)]


def drift_table(setup):
    setup.src_exec("create table public.dr (id int primary key, a text, extra text)")
    setup.src_exec("create trigger t after insert on public.dr"
                   " for each row execute procedure pgq.logutriga(%s)", (setup.queue,))
    setup.dst_exec("create table public.dr (id int primary key, a text)")


def test_on_new_column_error_stops(setup):
    drift_table(setup)
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec("insert into dr values (1, 'x', 'e')")
    setup.tick()
    with pytest.raises(EventError) as caught:
        worker.run_once()
    assert "on_new_column" in str(caught.value)


def test_on_new_column_ignore_drops_value(setup):
    drift_table(setup)
    worker = setup.worker(mode="keep_latest", on_new_column="ignore")
    worker.start()
    counted = record_counts(worker)
    setup.src_exec("insert into dr values (1, 'x', 'e'), (2, 'y\tz', null)")
    setup.tick()
    drain(worker)
    assert rows_of(setup, 'public."dr_%s"' % last_suffix(setup)) == [
        (1, "x"), (2, "y\tz")]
    assert counted[0].values_dropped == 2


@pytest.mark.parametrize("mode", ["keep_latest", "keep_all"])
def test_on_new_column_add_adds_text_column(setup, mode):
    drift_table(setup)
    worker = setup.worker(mode=mode, on_new_column="add")
    worker.start()
    setup.src_exec("insert into dr values (1, 'x', 'e')")
    setup.tick()
    drain(worker)
    partition = 'public."dr_%s"' % last_suffix(setup)
    assert rows_of(setup, partition) == [(1, "x", "e")]
    assert setup.dst_query("select data_type from information_schema.columns"
                           " where table_name = 'dr' and column_name = 'extra'") == [
        ("text",)]


@pytest.mark.parametrize("flush", [1, 5000])
def test_on_truncate_counts_only_kept_rows(setup, monkeypatch, flush):
    # With a flush per event, the rows before the truncate are already copied.
    monkeypatch.setattr(apply, "FLUSH_EVENTS", flush)
    truncate_table(setup)
    worker = setup.worker(mode="keep_all", on_truncate="truncate")
    worker.start()
    counted = record_counts(worker)
    setup.src_exec("insert into item values (1, 'a', 1), (2, 'b', 2)")
    setup.src_exec("truncate item")
    setup.src_exec("insert into item values (3, 'c', 3)")
    setup.tick()
    drain(worker)
    assert rows_of(setup, 'public."item_%s"' % last_suffix(setup)) == [(3, "c", 3)]
    assert counted[0].inserted == {"public.item": 1}
