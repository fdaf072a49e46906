"""Encoding of rows in PostgreSQL's COPY text format."""

import re

_SPECIAL = re.compile(r"[\\\t\n\r]")
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})

NULL = "\\N"


def encode_value(value):
    """Return VALUE as one COPY text field. None is NULL."""
    if value is None:
        return NULL
    if _SPECIAL.search(value):
        return value.translate(_ESCAPES)
    return value


def encode_fields(values):
    """Return VALUES as COPY text fields joined by tabs, without the newline."""
    nulls = values.count(None)
    fields = values
    if nulls:
        fields = [NULL if value is None else value for value in values]
    line = "\t".join(fields)
    # Most rows need no escaping, so check the whole line at once. When no
    # value contains a special character, the line contains one backslash per
    # NULL and one tab per separator.
    if (line.count("\\") == nulls and line.count("\t") == len(values) - 1
            and "\n" not in line and "\r" not in line):
        return line
    return "\t".join([encode_value(value) for value in values])


_ESCAPED = re.compile(r"\\(.)")
_UNESCAPES = {"t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}


def decode_field(field):
    """Return the value of one COPY text FIELD: the inverse of encode_value."""
    if field == NULL:
        return None
    if "\\" not in field:
        return field
    return _ESCAPED.sub(lambda match: _UNESCAPES.get(match.group(1), match.group(1)),
                        field)


def encode_row(values):
    """Return one COPY text line, with its newline."""
    return encode_fields(values) + "\n"


_LINE_NUMBER = re.compile(r"\bline (\d+)\b")


def failed_line(diag_context):
    """Return the 1-based line number that a COPY error's context names, or None."""
    if not diag_context:
        return None
    match = _LINE_NUMBER.search(diag_context)
    return int(match.group(1)) if match else None
