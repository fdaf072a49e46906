"""Translate skytools-style ini text into text that configobj parses.

skytools read job files with Python's ConfigParser, which continues a value
on the following lines when they are indented deeper than the key. configobj
has no such rule, so the continued value is folded into a triple-quoted
multi-line value before configobj sees it.
"""

import re

_KEY_LINE = re.compile(r"^(?P<indent>[ \t]*)(?P<key>[^\s=#;\[][^=]*?)\s*=\s*(?P<value>.*)$")


def _indent_width(line):
    return len(line) - len(line.lstrip(" \t"))


def _quote_multiline(value, lineno):
    for quote in ("'''", '"""'):
        if quote not in value:
            return quote + value + quote
    raise ValueError(
        "line %d: a continued value contains both ''' and \"\"\"; "
        "remove one of them" % lineno
    )


def fold_continuation_lines(text):
    """Return TEXT with ConfigParser continuation lines folded into one value.

    Raise ValueError naming the line when a folded value cannot be quoted.
    """
    lines = text.splitlines()
    output = []
    index = 0
    while index < len(lines):
        line = lines[index]
        match = _KEY_LINE.match(line)
        index += 1
        if not match:
            output.append(line)
            continue

        value_start = match.group("value").lstrip()
        if value_start.startswith(("'''", '"""')):
            # Already in configobj's multi-line syntax.
            output.append(line)
            continue

        key_indent = _indent_width(line)
        parts = [match.group("value").strip()] if match.group("value").strip() else []
        continued = False
        scan = index
        while scan < len(lines):
            candidate = lines[scan]
            stripped = candidate.strip()
            if not stripped or stripped[0] in "#;":
                scan += 1
                continue
            if _indent_width(candidate) <= key_indent:
                break
            parts.append(stripped)
            continued = True
            scan += 1
            index = scan

        if not continued:
            output.append(line)
            continue
        value = "\n".join(parts)
        output.append(
            "%s%s = %s" % (match.group("indent"), match.group("key"),
                           _quote_multiline(value, index))
        )
    return "\n".join(output) + "\n"
