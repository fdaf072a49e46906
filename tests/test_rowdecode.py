"""The C row decoder agrees with the Python decoder, or leaves the row to it."""

import pytest
from hypothesis import example, given, settings

from cubemux import events, rowdecode
from cubemux.errors import EventError
from urlrows import encode, raw_text, rows

pytestmark = pytest.mark.skipif(not rowdecode.AVAILABLE,
                                reason="skytools' C module is not installed")

raw_pieces = raw_text()


def python_decode(data):
    """Decode DATA with the C decoder switched off."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rowdecode, "db_urldecode", None)
        try:
            return events.decode_row(data)
        except EventError:
            return EventError


def check_agrees(data):
    fast = rowdecode.decode_row(data)
    slow = python_decode(data)
    if fast is not None:
        assert slow is not EventError, "the C decoder accepted a row Python rejects"
        assert fast == slow


@settings(max_examples=1000)
@given(data=raw_pieces)
@example(data="a=b=c")
@example(data="=x")
@example(data="a=1&&b=2&")
@example(data="a=1&a=2&b")
def test_rowdecode_agrees_on_raw_text(data):
    check_agrees(data)


@settings(max_examples=300)
@given(pairs=rows)
def test_rowdecode_agrees_on_encoded_rows(pairs):
    data = encode(pairs)
    check_agrees(data)
    assert rowdecode.decode_row(data) is not None


def test_rowdecode_leaves_errors_to_python():
    for data in ("a=%zz", "a=%4", "a=%", "a=%ff", "=x", "a=b=c", "a=\ud800",
                 "%zz=1", "a=%ed%a0%80"):
        assert rowdecode.decode_row(data) is None, data


def test_decode_row_names_event_on_invalid_utf8():
    with pytest.raises(EventError) as info:
        events.decode_row("id=1&name=%ff", ev_id=42, table="public.t")
    assert info.value.ev_id == 42
