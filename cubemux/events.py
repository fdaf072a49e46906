"""Decode the row-change events that pgq.logutriga() writes.

An event's ``ev_type`` is the operation (I, U or D), a colon and the
comma-separated primary key columns. Older producers write only the
operation and put the key list in ``ev_extra2``. ``ev_data`` is the row,
url-encoded: ``name`` without ``=`` is NULL, ``name=`` is the empty string,
``+`` is a space and ``%XX`` are bytes of UTF-8 text. ``ev_extra1`` is the
source table as ``schema.table``, unquoted.
"""

import dataclasses
import re
from urllib.parse import unquote_to_bytes

from cubemux.errors import EventError

OPERATIONS = frozenset("IUD")

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclasses.dataclass(slots=True)
class Event:
    """One decoded row change."""

    ev_id: int
    op: str
    schema: str
    table: str
    pkeys: tuple
    columns: tuple
    values: list

    @property
    def qualified_table(self):
        return "%s.%s" % (self.schema, self.table)


def url_decode(text, ev_id=None, table=None):
    """Decode one url-encoded name or value into text.

    Raise EventError on a malformed %-escape or on bytes that are not UTF-8.
    """
    if "%" not in text and "+" not in text:
        return text
    if _BAD_ESCAPE.search(text):
        raise EventError(
            "invalid url-encoding %r: '%%' must be followed by two hex digits"
            % _excerpt(text), ev_id, table)
    raw = unquote_to_bytes(text.replace("+", " "))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise EventError(
            "value %r is not valid UTF-8 (%s)" % (_excerpt(text), error.reason),
            ev_id, table) from None


def _excerpt(text, limit=60):
    return text if len(text) <= limit else text[:limit] + "..."


def decode_row(data, ev_id=None, table=None):
    """Decode ev_data into (columns, values). A NULL value is None.

    When a column occurs twice, the last value wins, as in skytools.
    """
    if not data:
        return (), []
    columns = []
    values = []
    for pair in data.split("&"):
        name, has_value, value = pair.partition("=")
        columns.append(url_decode(name, ev_id, table))
        values.append(url_decode(value, ev_id, table) if has_value else None)

    if len(set(columns)) != len(columns):
        merged = dict(zip(columns, values))
        return tuple(merged), list(merged.values())
    return tuple(columns), values


def split_table(extra1, ev_id=None):
    """Split ev_extra1 into (schema, table). A name without a dot is in public."""
    if not extra1:
        raise EventError("ev_extra1 is empty: the event names no table", ev_id)
    schema, dot, table = extra1.partition(".")
    if not dot:
        return "public", extra1
    return schema, table


def split_keys(key_list, columns):
    """Split a comma-separated key list into column names.

    logutriga does not escape a comma inside a column name, so pieces that
    do not name a column of the row are joined with the next piece.
    """
    if not key_list:
        return ()
    known = set(columns)
    keys = []
    pending = None
    for piece in key_list.split(","):
        name = piece if pending is None else pending + "," + piece
        if name in known or not known:
            keys.append(name)
            pending = None
        else:
            pending = name
    if pending is not None:
        keys.append(pending)
    return tuple(keys)


def decode_event(ev_id, ev_type, ev_data, ev_extra1, ev_extra2=None):
    """Decode one logutriga event. Raise EventError for any other event type."""
    op, colon, key_list = (ev_type or "").partition(":")
    if op not in OPERATIONS:
        raise EventError(
            "unsupported event type %r: only logutriga row events of type "
            "I, U or D can be dispatched" % ev_type, ev_id, ev_extra1)
    if not colon:
        # Older producers put the key list in ev_extra2.
        key_list = ev_extra2 or ""

    schema, table = split_table(ev_extra1, ev_id)
    columns, values = decode_row(ev_data, ev_id, ev_extra1)
    return Event(
        ev_id=ev_id,
        op=op,
        schema=schema,
        table=table,
        pkeys=split_keys(key_list, columns),
        columns=columns,
        values=values,
    )
