"""End-to-end runs of the consumer loop on real PostgreSQL and pgq."""

from conftest import drain


def _partition_suffix(setup, fmt="YYYY_MM_DD"):
    return setup.src_query("select to_char(tick_time, %s) from pgq.tick "
                           "order by tick_id desc limit 1", (fmt,))[0][0]


def test_keep_latest_applies_inserts_updates_deletes(setup):
    setup.table("create table public.item (id int primary key, name text, price numeric)",
                "public.item")
    worker = setup.worker(mode="keep_latest")
    worker.start()
    setup.src_exec("insert into item values (1, 'a', 1.5), (2, 'b', null), (3, 'c', 3)")
    setup.src_exec("update item set name = 'a2' where id = 1")
    setup.src_exec("delete from item where id = 3")
    setup.tick()
    assert drain(worker) == 1

    suffix = _partition_suffix(setup)
    rows = setup.dst_query('select id, name, price from public."item_%s" order by id'
                           % suffix)
    assert rows[0][:2] == (1, "a2")
    assert rows[1][:2] == (2, "b")
    assert rows[1][2] is None
    assert len(rows) == 2
