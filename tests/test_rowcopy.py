"""Rows straight to COPY text in C: the same lines as decoding and encoding them."""

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cubemux import copytext, events
from cubemux.errors import EventError
from urlrows import PIECES, encode, raw_text, rows

# Raw text with escapes of the characters that COPY escapes, and raw ones too.
raw_pieces = raw_text(PIECES + ["%5C", "%0a", "%0D", "\\", "\t", "\n", "\r"],
                      max_size=14)


def decode_both(data):
    """Return what decode_event and decode_event_line make of DATA, or their errors."""
    results = []
    for decode in (events.decode_event, events.decode_event_line):
        try:
            results.append(decode(7, "I:a", data, "public.t"))
        except EventError as error:
            results.append(str(error))
    return results


def check_same(data):
    by_values, by_line = decode_both(data)
    if isinstance(by_values, str):
        assert by_line == by_values
        return
    assert by_line.columns == by_values.columns
    assert by_line.pkeys == by_values.pkeys
    assert (by_line.ev_id, by_line.op, by_line.schema, by_line.table) == (
        by_values.ev_id, by_values.op, by_values.schema, by_values.table)
    if by_line.line is None:
        assert by_line.values == by_values.values
    else:
        assert by_line.values is None
        assert by_line.line == copytext.encode_fields(by_values.values)


def test_c_encoder_is_built():
    # Without it every row takes the slower path, which the tests would not notice.
    assert events.LINES_AVAILABLE


@settings(max_examples=2000)
@given(rows)
@example([("a", "x\ty\\z\nw\r"), ("b", None), ("c", "")])
@example([("a", "1"), ("a", "2")])
@example([("a=b", "c&d"), ("+", "+ %")])
def test_encoded_rows_give_same_line(pairs):
    check_same(encode(pairs))


@settings(max_examples=3000)
@given(raw_pieces)
@example("a=b=c")
@example("a=%00")
@example("&&a=1&&")
@example("a=%ed%a0%80")
@example("=1")
@example("a=\ud800")
def test_raw_text_same_line_or_error(data):
    check_same(data)


def test_line_has_no_value_objects():
    event = events.decode_event_line(1, "U:id", "id=3&name=a+b&note", "s.t")
    assert event.values is None
    assert event.line == "3\ta b\t\\N"
    assert event.columns == ("id", "name", "note")
    assert event.pkeys == ("id",)


def test_without_c_encoder_decodes_values(monkeypatch):
    monkeypatch.setattr(events, "_rowcopy", None)
    event = events.decode_event_line(1, "U:id", "id=3&name=a+b&note", "s.t")
    assert event.line is None
    assert event.values == ["3", "a b", None]


@settings(max_examples=1000)
@given(rows, st.data())
@example([("a", "x\ty\\z"), ("b", None), ("c", "")], None)
def test_select_and_value_agree(pairs, data):
    by_values, by_line = decode_both(encode(pairs))
    if isinstance(by_values, str) or by_line.line is None:
        return
    count = len(by_values.columns)
    for index in range(count):
        assert by_line.value(index) == by_values.values[index]

    if data is None:
        indexes = [2, 0]
    else:
        indexes = data.draw(st.lists(st.integers(0, count - 1), max_size=8))
    names = tuple(by_values.columns[index] for index in indexes)
    by_values.select(indexes, names)
    by_line.select(indexes, names)
    assert by_line.columns == by_values.columns
    assert by_line.line == copytext.encode_fields(by_values.values)
