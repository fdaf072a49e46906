"""Partition naming, templates and creation under concurrency."""

import threading

import psycopg2
import pytest

from conftest import connect, drain
from cubemux import apply
from cubemux.errors import PartitionError
from cubemux.partitions import partition_name, render_template
from test_worker import item_table, last_suffix, rows_of


def test_partition_name_appends_suffix():
    assert partition_name("item", "2024_01_31") == "item_2024_01_31"


def test_partition_name_without_suffix():
    assert partition_name("item", None) == "item"


def test_partition_name_counts_bytes():
    with pytest.raises(PartitionError) as caught:
        partition_name("ä" * 27, "2024_01_31")
    assert "63" in str(caught.value)
    assert partition_name("ä" * 27, "2024_01") == "ä" * 27 + "_2024_01"


def test_render_template_quotes_identifiers(setup):
    template = ("create table _DEST_TABLE (like _PARENT);"
                " create index _SCHEMA_TABLE on _DEST_TABLE (_PKEY)")
    rendered = render_template(template, "my schema", 'we"ird', 'we"ird_2024',
                               ("a", "B b")).as_string(setup.dst)
    assert rendered == (
        'create table "my schema"."we""ird_2024" (like "my schema"."we""ird");'
        ' create index "my schema_we""ird_2024" on "my schema"."we""ird_2024"'
        ' ("a", "B b")')


def test_injection_in_table_name_stays_a_name(setup):
    name = 'x"; drop table victim; --'
    setup.dst_exec("create table victim (id int)")
    setup.dst_exec('create table public."%s" (id int primary key)' % name.replace('"', '""'))
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec("select pgq.insert_event(%s, 'I:id', 'id=1', %s, null, null, null)",
                   (setup.queue, "public." + name))
    setup.tick()
    drain(worker)
    partition = "%s_%s" % (name, last_suffix(setup))
    assert setup.dst_query('select id from public."%s"' % partition.replace('"', '""')
                           ) == [(1,)]
    assert setup.dst_query("select count(*) from pg_tables where tablename = 'victim'"
                           ) == [(1,)]


def test_concurrent_jobs_create_each_partition_once(setup):
    tables = ["t%02d" % number for number in range(30)]
    for table in tables:
        setup.table("create table public.%s (id int primary key, v text)" % table,
                    "public.%s" % table)
    workers = [setup.worker(name, mode="keep_all") for name in ("job1", "job2")]
    for worker in workers:
        worker.start()
    for table in tables:
        setup.src_exec("insert into %s values (1, 'x')" % table)
    setup.tick()

    barrier = threading.Barrier(2)
    errors = []

    def run(worker):
        barrier.wait()
        try:
            drain(worker)
        except Exception as error:  # Reported by the assertion below.
            errors.append(error)

    threads = [threading.Thread(target=run, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert sum(worker.partitioner.created for worker in workers) == len(tables)
    suffix = last_suffix(setup)
    for table in tables:
        assert len(rows_of(setup, 'public."%s_%s"' % (table, suffix))) == 2


def test_parent_not_locked_while_batch_loads(setup, monkeypatch):
    item_table(setup)
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()

    loading = threading.Event()
    proceed = threading.Event()
    original_finish = apply.BatchWriter.finish

    def paused_finish(self):
        self.flush()
        loading.set()
        proceed.wait(30)
        return original_finish(self)

    monkeypatch.setattr(apply.BatchWriter, "finish", paused_finish)
    thread = threading.Thread(target=worker.run_once)
    thread.start()
    try:
        assert loading.wait(30)
        other = connect(setup.dst_dsn)
        other.autocommit = False
        with other.cursor() as cur:
            cur.execute("set lock_timeout = '2s'")
            cur.execute("lock table public.item in access exclusive mode")
        other.rollback()
        other.close()
    finally:
        proceed.set()
        thread.join(30)
    assert rows_of(setup, 'public."item_%s"' % last_suffix(setup)) == [(1, "a", 1)]


def test_template_error_names_partition(setup):
    item_table(setup)
    worker = setup.worker(mode="keep_latest", part_template="create tabel _DEST_TABLE")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    with pytest.raises(PartitionError) as caught:
        worker.run_once()
    assert "part_template" in str(caught.value)
    assert "item_" in str(caught.value)


def test_schema_table_absorbs_adjacent_letters(setup):
    template = ("create index _SCHEMA_TABLE_idx on _DEST_TABLE (v);"
                " create index pk_SCHEMA_TABLE on _DEST_TABLE (v)")
    rendered = render_template(template, "public", "Item", "Item_2024",
                               ("id",)).as_string(setup.dst)
    assert rendered == (
        'create index "public_Item_2024_idx" on "public"."Item_2024" (v);'
        ' create index "pkpublic_Item_2024" on "public"."Item_2024" (v)')


def test_schema_table_index_template_runs(setup):
    item_table(setup)
    template = ("create table _DEST_TABLE (like _PARENT);\n"
                "create index _SCHEMA_TABLE_name on _DEST_TABLE (name)")
    worker = setup.worker(mode="keep_all", part_template=template)
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1)")
    setup.tick()
    drain(worker)
    index = "public_item_%s_name" % last_suffix(setup)
    assert setup.dst_query("select count(*) from pg_indexes where indexname = %s",
                           (index,)) == [(1,)]
