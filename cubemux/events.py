"""Decode the row-change events that pgq.logutriga() writes.

An event's ``ev_type`` is the operation (I, U or D), a colon and the
comma-separated primary key columns. Older producers write only the
operation and put the key list in ``ev_extra2``. ``ev_data`` is the row,
url-encoded: ``name`` without ``=`` is NULL, ``name=`` is the empty string,
``+`` is a space and ``%XX`` are bytes of UTF-8 text. ``ev_extra1`` is the
source table as ``schema.table``, unquoted.

Error messages name the event, the table and the column, but contain no
row values, which may be personal data.
"""

import dataclasses
import re
from urllib.parse import unquote_to_bytes

from cubemux import copytext, rowdecode
from cubemux.errors import EventError

try:
    from cubemux import _rowcopy
except ImportError:
    _rowcopy = None

# Whether decode_event_line can skip the value objects in this build.
LINES_AVAILABLE = _rowcopy is not None

OPERATIONS = frozenset("IUD")

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

# pgq.sqltriga writes ev_data as partial SQL with non-NULL values quoted, such
# as "(id,name) values ('1','a')", "name=NULL where id='1'" or "id='1'", so
# it always contains a space or a quote. Url-encoding writes neither.
_SQL_TEXT = re.compile(r"[ ']")


@dataclasses.dataclass(slots=True)
class Event:
    """One decoded row change."""

    ev_id: int
    op: str
    schema: str
    table: str
    pkeys: tuple
    columns: tuple
    values: list | None
    # The values as one COPY text line, from decode_event_line. Then values
    # is None.
    line: str | None = None

    @property
    def qualified_table(self):
        return "%s.%s" % (self.schema, self.table)

    def select(self, indexes, columns):
        """Keep only the values at INDEXES, under the names COLUMNS."""
        if self.line is None:
            values = self.values
            self.values = [values[index] for index in indexes]
        else:
            # Encoded fields contain no raw tab, so splitting on tabs is exact.
            fields = self.line.split("\t")
            self.line = "\t".join([fields[index] for index in indexes])
        self.columns = columns

    def value(self, index):
        """Return the value of column number INDEX. None is NULL."""
        if self.line is None:
            return self.values[index]
        return copytext.decode_field(self.line.split("\t")[index])


def url_decode(text):
    """Decode one url-encoded name or value into text.

    Raise ValueError, with a message that does not repeat TEXT, on a
    malformed %-escape or on bytes that are not UTF-8.
    """
    if "%" not in text and "+" not in text:
        return text
    bad = _BAD_ESCAPE.search(text)
    if bad:
        escape = text[bad.start():bad.start() + 3]
        raise ValueError(
            "invalid url-encoding %r at character %d: '%%' must be followed "
            "by two hex digits" % (escape, bad.start() + 1))
    try:
        raw = unquote_to_bytes(text.replace("+", " "))
    except UnicodeEncodeError as error:
        raise ValueError("the text contains a lone surrogate at character %d"
                         % (error.start + 1)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            "the decoded bytes are not valid UTF-8: byte 0x%02x at offset %d"
            % (raw[error.start], error.start)) from None


def decode_row(data, ev_id=None, table=None):
    """Decode ev_data into (columns, values). A NULL value is None.

    When a column occurs twice, the last value wins, as in skytools. Empty
    pieces between ``&`` are skipped, as skytools does. Raise EventError
    naming EV_ID, TABLE and the column for a piece that cannot be decoded.
    """
    if not data:
        return (), []
    decoded = rowdecode.decode_row(data)
    if decoded is not None:
        return decoded
    columns = []
    values = []
    for number, pair in enumerate(data.split("&"), start=1):
        if not pair:
            continue
        encoded_name, has_value, encoded_value = pair.partition("=")
        try:
            name = url_decode(encoded_name)
        except ValueError as error:
            raise EventError("name of column %d: %s" % (number, error),
                             ev_id, table) from None
        if not name:
            raise EventError("column %d of the row has an empty name" % number,
                             ev_id, table)
        if has_value:
            try:
                value = url_decode(encoded_value)
            except ValueError as error:
                raise EventError("value of column %r: %s" % (name, error),
                                 ev_id, table) from None
        else:
            value = None
        columns.append(name)
        values.append(value)

    if len(set(columns)) != len(columns):
        merged = dict(zip(columns, values))
        return tuple(merged), list(merged.values())
    return tuple(columns), values


def split_table(extra1, ev_id=None):
    """Split ev_extra1 into (schema, table). A name without a dot is in public.

    logutriga does not quote the names, so the first dot ends the schema.
    """
    if not extra1:
        raise EventError("ev_extra1 is empty: the event names no table", ev_id)
    schema, dot, table = extra1.partition(".")
    if not dot:
        return "public", extra1
    if not schema or not table:
        raise EventError("ev_extra1 %r is not a table name of the form "
                         "schema.table" % extra1, ev_id, extra1)
    return schema, table


def split_keys(key_list, columns):
    """Split a comma-separated key list into column names.

    logutriga does not escape a comma inside a column name. So at each
    position the longest run of pieces that, joined with commas again,
    names a column of the row is one key. A piece that starts no such run
    is a key of its own.
    """
    if not key_list:
        return ()
    if "," not in key_list:
        return (key_list,)
    known = set(columns)
    pieces = key_list.split(",")
    keys = []
    start = 0
    while start < len(pieces):
        end = start + 1
        for candidate in range(len(pieces), start + 1, -1):
            if ",".join(pieces[start:candidate]) in known:
                end = candidate
                break
        keys.append(",".join(pieces[start:end]))
        start = end
    return tuple(keys)


def decode_event(ev_id, ev_type, ev_data, ev_extra1, ev_extra2=None):
    """Decode one logutriga event. Raise EventError for any other event type."""
    head = _HEADS.get((ev_type, ev_extra1))
    if head is None:
        head = _head(ev_id, ev_type, ev_data, ev_extra1, ev_extra2)
    op, schema, table, key_list, pkeys = head
    decoded = rowdecode.decode_row(ev_data) if ev_data else None
    if decoded is None:
        decoded = decode_row(ev_data, ev_id, ev_extra1)
    columns, values = decoded
    if pkeys is None:
        pkeys = split_keys(key_list, columns)
    return Event(ev_id, op, schema, table, pkeys, columns, values)


def decode_event_line(ev_id, ev_type, ev_data, ev_extra1, ev_extra2=None):
    """Decode one event into its columns and its values as a COPY text line.

    This needs no Python object per value. A row that the C encoder does
    not take, or a build without it, is decoded by decode_event instead.
    """
    encoded = _rowcopy.encode(ev_data) if _rowcopy is not None and ev_data else None
    if encoded is None:
        return decode_event(ev_id, ev_type, ev_data, ev_extra1, ev_extra2)
    names, line = encoded
    columns = _SHAPES.get(names)
    if columns is None:
        columns = _shape(names)
    if not columns:
        return decode_event(ev_id, ev_type, ev_data, ev_extra1, ev_extra2)

    head = _HEADS.get((ev_type, ev_extra1))
    if head is None:
        head = _head(ev_id, ev_type, ev_data, ev_extra1, ev_extra2)
    op, schema, table, key_list, pkeys = head
    if pkeys is None:
        pkeys = split_keys(key_list, columns)
    return Event(ev_id, op, schema, table, pkeys, columns, None, line)


# Columns of the encoded names that _rowcopy.encode returns, or () when the
# row must be decoded in Python: a name repeats, or a name is malformed.
_SHAPES = {}


def _shape(names):
    try:
        columns, _ = decode_row(names)
    except EventError:
        columns = ()
    # decode_row merges a repeated name, which leaves fewer columns than names.
    if len(columns) != names.count("&") + 1:
        columns = ()
    if len(_SHAPES) >= _HEADS_LIMIT:
        _SHAPES.clear()
    _SHAPES[names] = columns
    return columns


# Cache of decode_event: for each (ev_type, ev_extra1), the operation, schema,
# table and key list, and the key tuple when splitting it needs no columns.
_HEADS = {}
_HEADS_LIMIT = 10000


def _head(ev_id, ev_type, ev_data, ev_extra1, ev_extra2):
    op, colon, key_list = (ev_type or "").partition(":")
    if op not in OPERATIONS:
        raise EventError(_unsupported_type(ev_type), ev_id, ev_extra1)
    if not colon:
        if ev_data and _SQL_TEXT.search(ev_data):
            raise EventError(
                "event type %r carries SQL text, as pgq.sqltriga writes it, "
                "not a url-encoded row: create the source table's trigger "
                "with pgq.logutriga" % ev_type,
                ev_id, ev_extra1)
        # Older producers put the key list in ev_extra2.
        key_list = ev_extra2 or ""
    schema, table = split_table(ev_extra1, ev_id)
    pkeys = None if "," in key_list else split_keys(key_list, ())
    head = (op, schema, table, key_list, pkeys)
    # Without a colon the keys come from ev_extra2 and the check above
    # depends on ev_data, so only types with a colon are remembered.
    if colon:
        if len(_HEADS) >= _HEADS_LIMIT:
            _HEADS.clear()
        _HEADS[(ev_type, ev_extra1)] = head
    return head


def _unsupported_type(ev_type):
    if ev_type == "R":
        return ("event type 'R' (TRUNCATE) is not supported: only I, U and D "
                "row events from pgq.logutriga can be dispatched, so drop the "
                "truncate trigger of the source table")
    return ("unsupported event type %r: only I, U and D row events from "
            "pgq.logutriga can be dispatched" % ev_type)
