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


def encode_row(values):
    """Return one COPY text line, with its newline."""
    return "\t".join([encode_value(value) for value in values]) + "\n"


_LINE_NUMBER = re.compile(r"\bline (\d+)\b")


def failed_line(diag_context):
    """Return the 1-based line number that a COPY error's context names, or None."""
    if not diag_context:
        return None
    match = _LINE_NUMBER.search(diag_context)
    return int(match.group(1)) if match else None
