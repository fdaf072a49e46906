"""Property test: the set-based apply equals applying events one at a time."""

from urllib.parse import quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import drain
from cubemux import apply
from test_worker import last_suffix

DEFAULTS = {"a": None, "b": "dflt"}

# PostgreSQL text cannot contain NUL, so COPY rejects it like any bad value.
# Surrogates have no UTF-8 encoding.
values = st.one_of(st.none(),
                   st.text(st.characters(blacklist_categories=["Cs"],
                                         blacklist_characters="\x00"), max_size=8))
events = st.lists(
    st.tuples(
        st.sampled_from("IUD"),
        st.integers(min_value=1, max_value=4),
        st.dictionaries(st.sampled_from(["a", "b"]), values),
    ),
    min_size=1,
    max_size=25,
)


def encode(columns):
    pairs = []
    for name, value in columns.items():
        if value is None:
            pairs.append(quote_plus(name))
        else:
            pairs.append("%s=%s" % (quote_plus(name), quote_plus(value)))
    return "&".join(pairs)


def model_latest(sequence):
    """Apply events one at a time with keep_latest rules."""
    rows = {}
    for op, key, columns in sequence:
        rows.pop(key, None)
        if op != "D":
            row = dict(DEFAULTS)
            row.update(columns)
            rows[key] = (key, row["a"], row["b"])
    return sorted(rows.values())


def model_all(sequence):
    rows = []
    for op, key, columns in sequence:
        row = dict(DEFAULTS)
        row.update(columns)
        rows.append((key, row["a"], row["b"]))
    return sorted(rows, key=repr)


# Events per COPY: a few, so that a batch is several COPY statements sent by
# the writer's thread, or the default, so that it is one per column set.
FLUSHES = st.sampled_from([3, apply.FLUSH_EVENTS])


@pytest.fixture
def model_setup(setup):
    setup.dst_exec("create table public.m (id int primary key, a text,"
                   " b text default 'dflt')")
    setup.dst_exec("create table public.n (id int, a text, b text default 'dflt')")
    return setup


def _send(setup, table, sequence):
    for op, key, columns in sequence:
        data = encode({"id": str(key), **columns})
        setup.src_exec("select pgq.insert_event(%s, %s, %s, %s, null, null, null)",
                       (setup.queue, "%s:id" % op, data, "public." + table))
    setup.tick()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=events, split=st.integers(min_value=0, max_value=25),
       flush=FLUSHES)
def test_keep_latest_matches_model(model_setup, monkeypatch, sequence, split, flush):
    setup = model_setup
    monkeypatch.setattr(apply, "FLUSH_EVENTS", flush)
    worker = setup.worker("latest", mode="keep_latest")
    try:
        worker.start()
        _send(setup, "m", sequence[:split])
        _send(setup, "m", sequence[split:])
        drain(worker)
    finally:
        worker.close()

    table = 'public."m_%s"' % last_suffix(setup)
    rows = setup.dst_query("select id, a, b from %s order by id" % table)
    setup.dst_exec("truncate %s" % table)
    assert rows == model_latest(sequence)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=events.map(lambda seq: [event for event in seq if event[0] != "D"]),
       flush=FLUSHES)
def test_keep_all_matches_model(model_setup, monkeypatch, sequence, flush):
    setup = model_setup
    monkeypatch.setattr(apply, "FLUSH_EVENTS", flush)
    worker = setup.worker("all", mode="keep_all")
    try:
        worker.start()
        _send(setup, "n", sequence)
        drain(worker)
    finally:
        worker.close()

    table = 'public."n_%s"' % last_suffix(setup)
    rows = setup.dst_query("select id, a, b from %s" % table)
    setup.dst_exec("truncate %s" % table)
    assert sorted(rows, key=repr) == model_all(sequence)
