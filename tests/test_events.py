"""The logutriga event decoder: types, key lists, url-encoding, errors."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cubemux.errors import EventError
from cubemux.events import decode_event, decode_row, split_keys, split_table

# Event types.


def test_insert_with_key():
    event = decode_event(7, "I:id", "id=1&txt=text1&val", "public.trigger_base")
    assert event.ev_id == 7
    assert event.op == "I"
    assert event.schema == "public"
    assert event.table == "trigger_base"
    assert event.qualified_table == "public.trigger_base"
    assert event.pkeys == ("id",)
    assert event.columns == ("id", "txt", "val")
    assert event.values == ["1", "text1", None]


def test_update_with_key():
    event = decode_event(8, "U:id", "id=1&txt=text2&val", "public.trigger_base")
    assert event.op == "U"
    assert event.values == ["1", "text2", None]


def test_delete_with_key():
    event = decode_event(9, "D:id", "id=2&txt&val=1.5", "public.trigger_base")
    assert event.op == "D"
    assert event.values == ["2", None, "1.5"]


def test_composite_key_list():
    event = decode_event(1, "I:nr,col1", "nr=1&col1=a&col2=b", "s.t")
    assert event.pkeys == ("nr", "col1")


def test_empty_key_list():
    event = decode_event(1, "I:", "dat=foo", "public.nopk")
    assert event.pkeys == ()
    assert event.columns == ("dat",)


def test_old_style_keys_in_extra2():
    event = decode_event(1, "I", "id=1&b=2", "public.t", "id,b")
    assert event.op == "I"
    assert event.pkeys == ("id", "b")


def test_old_style_without_extra2():
    assert decode_event(1, "U", "id=1", "public.t").pkeys == ()


def test_new_style_ignores_extra2():
    # With the backup argument, ev_extra2 contains the old row of an update.
    event = decode_event(1, "U:id", "id=1&v=new", "public.t", "id=1&v=old")
    assert event.pkeys == ("id",)
    assert event.values == ["1", "new"]


def test_colon_in_key_name():
    event = decode_event(1, "I:a:b", "a%3ab=1", "public.t")
    assert event.pkeys == ("a:b",)
    assert event.columns == ("a:b",)


# Values.


def test_null_and_empty_string():
    assert decode_row("n&e=&v=x") == (("n", "e", "v"), [None, "", "x"])


def test_plus_is_space():
    assert decode_row("v=a+b++c")[1] == ["a b  c"]


def test_encoded_plus_is_plus():
    assert decode_row("v=1%2b1")[1] == ["1+1"]


def test_utf8_text_decoded():
    assert decode_row("v=J%c3%bcrgen+%e2%82%ac+%f0%9f%90%98")[1] == ["Jürgen € 🐘"]


def test_upper_case_hex():
    assert decode_row("v=J%C3%BCrgen%2D%2d")[1] == ["Jürgen--"]


def test_minus_encoded_and_raw():
    assert decode_row("v=%2d1-2%2d")[1] == ["-1-2-"]


def test_special_characters_in_value():
    row = decode_row("v=a%26b%3dc%25d%2be+f%3f%23")
    assert row[1] == ["a&b=c%d+e f?#"]


def test_raw_equals_after_first():
    assert decode_row("expr=a=b")[1] == ["a=b"]


def test_raw_unicode_kept():
    assert decode_row("v=ä")[1] == ["ä"]


def test_bytea_and_array_text():
    row = decode_row("b=%5cx00ff01&a=%7b%22a+b%22%2cNULL%7d")
    assert row[1] == ["\\x00ff01", '{"a b",NULL}']


def test_duplicate_column_last_wins():
    assert decode_row("a=1&b=2&a=3") == (("a", "b"), ["3", "2"])


def test_duplicate_column_null_last():
    assert decode_row("a=1&a") == (("a",), [None])


def test_empty_data_no_columns():
    assert decode_row("") == ((), [])


def test_none_data_no_columns():
    assert decode_row(None) == ((), [])


def test_empty_pieces_skipped():
    assert decode_row("&a=1&&b=2&") == (("a", "b"), ["1", "2"])


# Column names.


def test_column_name_with_spaces():
    event = decode_event(1, "I:my id", "my+id=1&other+col=2", "public.t")
    assert event.columns == ("my id", "other col")
    assert event.pkeys == ("my id",)


def test_column_name_mixed_case():
    event = decode_event(1, "U:UserId", "UserId=5&eMail=x", "public.t")
    assert event.columns == ("UserId", "eMail")
    assert event.pkeys == ("UserId",)


def test_column_name_with_comma():
    event = decode_event(1, "I:a,b,c", "a%2cb=1&c=2&d=3", "public.t")
    assert event.columns == ("a,b", "c", "d")
    assert event.pkeys == ("a,b", "c")


def test_column_name_utf8():
    event = decode_event(1, "I:küsi", "k%c3%bcsi=1", "public.t")
    assert event.pkeys == ("küsi",)


def test_split_keys_longest_match():
    assert split_keys("a,b", ("a", "b", "a,b")) == ("a,b",)


def test_split_keys_longest_of_three():
    assert split_keys("a,b,c", ("a,b", "c", "a,b,c")) == ("a,b,c",)


def test_split_keys_unknown_piece_alone():
    assert split_keys("x,b", ("b",)) == ("x", "b")


def test_split_keys_without_columns():
    assert split_keys("a,b", ()) == ("a", "b")


def test_split_keys_empty_list():
    assert split_keys("", ("a",)) == ()


# Table names.


def test_table_without_schema():
    event = decode_event(1, "I:id", "id=1", "item")
    assert event.schema == "public"
    assert event.table == "item"


def test_table_name_first_dot():
    assert split_table("s.t.x") == ("s", "t.x")


@pytest.mark.parametrize("extra1", ["", None])
def test_table_missing(extra1):
    with pytest.raises(EventError) as raised:
        decode_event(12, "I:id", "id=1", extra1)
    assert "event 12" in str(raised.value)
    assert "ev_extra1 is empty" in str(raised.value)


@pytest.mark.parametrize("extra1", ["public.", ".item", "."])
def test_table_part_empty(extra1):
    with pytest.raises(EventError) as raised:
        decode_event(12, "I:id", "id=1", extra1)
    assert "schema.table" in str(raised.value)


# Errors.


def decode_error(ev_type, ev_data, ev_extra1="public.item", ev_id=42):
    with pytest.raises(EventError) as raised:
        decode_event(ev_id, ev_type, ev_data, ev_extra1)
    return raised.value


def test_error_truncate_event():
    error = decode_error("R", "")
    assert error.ev_id == 42
    assert error.table == "public.item"
    assert str(error).startswith("event 42, table public.item: ")
    assert "'R' (TRUNCATE) is not supported" in str(error)


@pytest.mark.parametrize("ev_type", ["X:foo", "X", "", None, "i:id", "II:id",
                                     "INSERT", '{"op":"INSERT"}'])
def test_error_unknown_type(ev_type):
    error = decode_error(ev_type, "id=1")
    assert str(error).startswith("event 42, table public.item: ")
    assert "unsupported event type %r" % ev_type in str(error)


@pytest.mark.parametrize("ev_type, ev_data", [
    ("I", "(id,name) values ('1','x')"),
    ("U", "name='x' where id='1'"),
    ("D", "id='1'"),
])
def test_error_sql_text_event(ev_type, ev_data):
    error = decode_error(ev_type, ev_data)
    assert str(error).startswith("event 42, table public.item: ")
    assert "SQL text" in str(error)
    assert "pgq.logutriga" in str(error)


@pytest.mark.parametrize("ev_data, escape", [
    ("id=1&v=%zz", "'%zz'"),
    ("id=1&v=abc%", "'%'"),
    ("id=1&v=%4", "'%4'"),
    ("id=1&v=%4g", "'%4g'"),
])
def test_error_broken_escape(ev_data, escape):
    error = decode_error("I:id", ev_data)
    assert str(error).startswith("event 42, table public.item: value of column 'v': ")
    assert "invalid url-encoding %s" % escape in str(error)


def test_error_broken_escape_in_name():
    error = decode_error("I:id", "id=1&b%g1=2")
    assert "name of column 2: invalid url-encoding '%g1' at character 2" in str(error)


@pytest.mark.parametrize("ev_data", ["v=%ff", "v=%c3", "v=%c3%28", "v=%ed%a0%80"])
def test_error_invalid_utf8(ev_data):
    error = decode_error("U:v", ev_data)
    assert "value of column 'v'" in str(error)
    assert "not valid UTF-8" in str(error)


def test_error_hides_row_value():
    error = decode_error("I:id", "id=1&secret=hunter2%zz")
    assert "hunter2" not in str(error)


def test_error_lone_surrogate():
    error = decode_error("I:v", "v=%41\ud800")
    assert "lone surrogate at character 4" in str(error)


def test_error_empty_column_name():
    error = decode_error("I:id", "id=1&=5")
    assert "column 2 of the row has an empty name" in str(error)


# Properties.

_KEPT = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def logutriga_encode(text, hex_format="%%%02x", keep_minus=True):
    """Url-encode TEXT as pgq.logutriga does: its UTF-8 bytes, A-Z a-z 0-9
    _ . - kept, a space as +, every other byte as %xx."""
    output = []
    for byte in text.encode("utf-8"):
        if byte in _KEPT and (keep_minus or byte != ord("-")):
            output.append(chr(byte))
        elif byte == ord(" "):
            output.append("+")
        else:
            output.append(hex_format % byte)
    return "".join(output)


def logutriga_row(row, **options):
    pieces = []
    for name, value in row.items():
        piece = logutriga_encode(name, **options)
        if value is not None:
            piece += "=" + logutriga_encode(value, **options)
        pieces.append(piece)
    return "&".join(pieces)


_ROWS = st.dictionaries(
    st.text(min_size=1),
    st.none() | st.just("") | st.text(),
    max_size=8,
)


@settings(max_examples=500)
@given(_ROWS)
@example({"a b": None, "c&d=e": "", "%+": "x=y&z 100%", "-": "-"})
def test_decode_row_roundtrip(row):
    assert decode_row(logutriga_row(row)) == (tuple(row), list(row.values()))


@settings(max_examples=200)
@given(_ROWS)
def test_decode_row_upper_hex_roundtrip(row):
    data = logutriga_row(row, hex_format="%%%02X", keep_minus=False)
    assert decode_row(data) == (tuple(row), list(row.values()))


@settings(max_examples=200)
@given(st.lists(st.text(alphabet=st.characters(exclude_characters=","), min_size=1),
                min_size=1, max_size=6, unique=True), st.data())
def test_split_keys_recovers_names(columns, data):
    keys = data.draw(st.lists(st.sampled_from(columns), unique=True))
    assert split_keys(",".join(keys), columns) == tuple(keys)


@settings(max_examples=200)
@given(st.lists(st.text(alphabet="ab,", min_size=1), max_size=5),
       st.text(alphabet="ab,"))
def test_split_keys_joins_back(columns, key_list):
    keys = split_keys(key_list, columns)
    assert ",".join(keys) == key_list


# Any code point, lone surrogates included, which psycopg2 never returns.
_ANY_CHARACTER = (st.characters(exclude_categories=())
                  | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))

_GARBAGE = st.text(
    alphabet=st.sampled_from("%&=+:,.IUDRX 0123456789abcdefABCDEFgz'ä\x00")
    | _ANY_CHARACTER)


@settings(max_examples=1000)
@given(st.integers(), st.none() | _GARBAGE, st.none() | _GARBAGE,
       st.none() | _GARBAGE, st.none() | _GARBAGE)
@example(1, "I:id", "\ud800%41", "public.t", None)
def test_garbage_decodes_or_event_error(ev_id, ev_type, ev_data, extra1, extra2):
    try:
        decode_event(ev_id, ev_type, ev_data, extra1, extra2)
    except EventError as error:
        assert error.ev_id == ev_id


@settings(max_examples=1000)
@given(st.text(alphabet=st.sampled_from("%&=+0123456789abcdefxyz\xff")
               | _ANY_CHARACTER))
def test_garbage_row_decodes_or_event_error(data):
    try:
        decode_row(data, 5, "public.t")
    except EventError as error:
        assert str(error).startswith("event 5, table public.t: ")


# Real pgq.logutriga output.


def test_real_logutriga_events(setup):
    setup.src_exec('create table public."Odd Table" ('
                   '"Id" int, "a,b" text, "my col" text, "Ümlaut" text, n text,'
                   ' e text, primary key ("Id", "a,b"))')
    setup.src_exec('create trigger t after insert or update or delete on '
                   'public."Odd Table" for each row execute procedure '
                   'pgq.logutriga(%s)', (setup.queue,))
    setup.src_exec("select pgq.register_consumer(%s, 'decoder')", (setup.queue,))
    value = "a&b=c %d+e-f_g.h ä€🐘 'q' \"d\" \\ / ? # \t\n end"
    setup.src_exec('insert into public."Odd Table" values (1, %s, %s, %s, null, %s)',
                   ("k,1", value, "ü", ""))
    setup.src_exec('update public."Odd Table" set "my col" = %s', ("-",))
    setup.src_exec('delete from public."Odd Table"')
    setup.tick()
    (batch_id,) = setup.src_query("select pgq.next_batch(%s, 'decoder')",
                                  (setup.queue,))[0]
    rows = setup.src_query(
        "select ev_id, ev_type, ev_data, ev_extra1, ev_extra2 "
        "from pgq.get_batch_events(%s) order by ev_id", (batch_id,))
    events = [decode_event(*row) for row in rows]

    columns = ("Id", "a,b", "my col", "Ümlaut", "n", "e")
    assert [event.op for event in events] == ["I", "U", "D"]
    assert events[0].schema == "public"
    assert events[0].table == "Odd Table"
    assert events[0].pkeys == ("Id", "a,b")
    assert events[0].columns == columns
    assert events[0].values == ["1", "k,1", value, "ü", None, ""]
    assert events[1].values == ["1", "k,1", "-", "ü", None, ""]
    assert events[2].values == ["1", "k,1", "-", "ü", None, ""]


def test_real_sqltriga_events_rejected(setup):
    setup.src_exec("create table public.sqlrows (id int primary key, name text)")
    setup.src_exec("create trigger t after insert or update or delete on "
                   "public.sqlrows for each row execute procedure "
                   "pgq.sqltriga(%s)", (setup.queue,))
    setup.src_exec("select pgq.register_consumer(%s, 'decoder')", (setup.queue,))
    setup.src_exec("insert into public.sqlrows values (1, 'a')")
    setup.src_exec("update public.sqlrows set name = null")
    setup.src_exec("delete from public.sqlrows")
    setup.tick()
    (batch_id,) = setup.src_query("select pgq.next_batch(%s, 'decoder')",
                                  (setup.queue,))[0]
    rows = setup.src_query(
        "select ev_id, ev_type, ev_data, ev_extra1, ev_extra2 "
        "from pgq.get_batch_events(%s) order by ev_id", (batch_id,))

    assert [row[1] for row in rows] == ["I", "U", "D"]
    for row in rows:
        with pytest.raises(EventError) as raised:
            decode_event(*row)
        assert "SQL text" in str(raised.value)
        assert raised.value.ev_id == row[0]
