"""Parse job files in the ini syntax of Python's configparser.

skytools reads its job files with configparser, so cubemux follows the
rules of ``configparser.ConfigParser()`` with default settings (Python 3):

- ``[name]`` starts a section. Keys under ``[DEFAULT]`` are inherited by
  every section.
- ``key = value`` and ``key: value`` set a key. The first ``=`` or ``:``
  ends the key name. Key names are case-insensitive and stored in lower
  case. Blanks around the key and the value are removed.
- A line whose first non-blank character is ``#`` or ``;`` is a comment.
  After a value, ``#`` and ``;`` are ordinary text.
- A line indented deeper than its key line continues the value, joined
  with a newline. Blank lines inside such a value are kept, trailing ones
  are dropped.
- ``%(name)s`` in a value is replaced by the value of key ``name``, and
  ``%%`` is a literal ``%`` (see interpolate).

It differs from configparser in three ways. Every problem is collected
with its line number instead of raising at the first one. A key or a
section that occurs twice is a warning and the last value wins, as in
Python 2's ConfigParser that skytools 2 used (configparser rejects it).
A value that starts with ``'''`` or ``\"\"\"`` runs verbatim up to the
same three quotes, over several lines if needed, as configobj reads it.
"""

import dataclasses
import re

DEFAULT_SECTION = "DEFAULT"

TRIPLE_QUOTES = ("'''", '"""')

_SECTION_HEADER = re.compile(r"\[(?P<name>.+)\]")
_KEY_LINE = re.compile(r"(?P<key>.*?)\s*[=:]\s*(?P<value>.*)$")
_NON_BLANK = re.compile(r"\S")
_REFERENCE = re.compile(r"%\(([^)]+)\)s")


@dataclasses.dataclass
class Setting:
    """The raw value of one key (before interpolation) and where it is.

    ``continued_at`` is the first indented line that continues the value.
    ``quoted`` is true for a value in triple quotes.
    """

    value: str
    lineno: int
    continued_at: int | None = None
    quoted: bool = False


@dataclasses.dataclass
class IniText:
    """The sections of a parsed file and the problems found in it.

    ``sections`` maps a section name to ``{key: Setting}``. ``errors`` and
    ``warnings`` are lists of ``(line number, message)``.
    """

    sections: dict = dataclasses.field(default_factory=dict)
    errors: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)


class InterpolationError(ValueError):
    """A ``%`` in a value is neither ``%%`` nor a reference to a set key."""


def parse_ini(text):
    """Parse TEXT into an IniText, with syntax problems in its errors."""
    parser = _Parser()
    parser.parse(text.split("\n"))
    return parser.result


class _Parser:
    def __init__(self):
        self.result = IniText()
        self.section = None
        self.section_name = None
        self.section_lines = {}
        self.setting = None
        self.parts = None
        self.key_indent = 0

    def parse(self, lines):
        index = 0
        while index < len(lines):
            line = lines[index]
            # From here on, index is also the 1-based number of this line.
            index += 1
            stripped = line.strip()
            if stripped.startswith(("#", ";")):
                continue
            if not stripped:
                if self.parts is not None:
                    self.parts.append("")
                continue

            indent = _NON_BLANK.search(line).start()
            if self.parts is not None and indent > self.key_indent:
                self.parts.append(stripped)
                if self.setting.continued_at is None:
                    self.setting.continued_at = index
                continue

            self._end_value()
            self.key_indent = indent
            header = _SECTION_HEADER.match(stripped)
            if header:
                self._start_section(header.group("name"), index)
            else:
                index = self._read_key_line(lines, index, stripped)
        self._end_value()

    def _error(self, lineno, message):
        self.result.errors.append((lineno, message))

    def _end_value(self):
        if self.parts is not None:
            self.setting.value = "\n".join(self.parts).rstrip()
        self.setting = None
        self.parts = None

    def _start_section(self, name, lineno):
        first = self.section_lines.get(name)
        if first is not None:
            self.result.warnings.append((lineno, (
                "section [%s] occurs again (first on line %d): "
                "its keys are merged into the first one" % (name, first))))
        else:
            self.section_lines[name] = lineno
        self.section = self.result.sections.setdefault(name, {})
        self.section_name = name

    def _read_key_line(self, lines, index, stripped):
        """Read the key line at INDEX - 1. Return the index of the next line."""
        lineno = index
        if self.section is None:
            self._error(lineno, "the line is above the first section header: "
                        "put a [section] line such as [cube_dispatcher] before it")
            return index
        match = _KEY_LINE.match(stripped)
        if match is None:
            self._error(lineno, "invalid line %r: expected 'key = value', "
                        "'key: value', a [section] header or a comment "
                        "starting with # or ;" % _excerpt(stripped))
            return index
        key = match.group("key").lower()
        if not key:
            self._error(lineno, "the line has no key name before its '=' or ':'")
            return index

        value = match.group("value")
        if value.startswith(TRIPLE_QUOTES):
            return self._read_quoted(lines, index, key, value)
        self.setting = self._set(key, value, lineno)
        self.parts = [value]
        return index

    def _read_quoted(self, lines, index, key, value):
        """Read a value in triple quotes that starts on line INDEX."""
        first_lineno = index
        quote = value[:3]
        collected = []
        rest = value[3:]
        while True:
            end = rest.find(quote)
            if end >= 0:
                collected.append(rest[:end])
                trailing = rest[end + 3:].strip()
                break
            collected.append(rest)
            if index >= len(lines):
                self._error(first_lineno, (
                    "the value of %s starts with %s but is never closed: "
                    "end it with %s" % (key, quote, quote)))
                return index
            rest = lines[index]
            index += 1

        if trailing:
            self._error(index, "text %r follows the closing %s of %s: remove it "
                        "or put it on a line of its own"
                        % (_excerpt(trailing), quote, key))
        setting = self._set(key, "\n".join(collected), first_lineno)
        setting.quoted = True
        return index

    def _set(self, key, value, lineno):
        previous = self.section.get(key)
        if previous is not None:
            self.result.warnings.append((lineno, (
                "[%s] %s is set again (first on line %d): the last value is used"
                % (self.section_name, key, previous.lineno))))
        setting = Setting(value, lineno)
        self.section[key] = setting
        return setting


def _excerpt(text, limit=60):
    return text if len(text) <= limit else text[:limit] + "..."


def interpolate(name, values, referenced=None):
    """Return the value of key NAME with ``%(key)s`` references expanded.

    VALUES maps lower-case key names to raw values. ``%%`` becomes ``%``.
    Key names in references are case-insensitive. REFERENCED, when given,
    is a set that receives the name of every key used. Raise
    InterpolationError for a reference to a key that is not set, for a
    reference loop and for a ``%`` that starts neither form. The message
    names the keys and never contains a value, which may be a password.
    """
    if referenced is None:
        referenced = set()
    return _expand(name, values, [name], referenced)


def _expand(name, values, chain, referenced):
    raw = values[name]
    output = []
    position = 0
    while True:
        percent = raw.find("%", position)
        if percent < 0:
            output.append(raw[position:])
            return "".join(output)
        output.append(raw[position:percent])

        if raw.startswith("%%", percent):
            output.append("%")
            position = percent + 2
            continue
        match = _REFERENCE.match(raw, percent)
        if match is None:
            raise InterpolationError(
                "%sa '%%' at character %d starts neither '%%%%' nor a "
                "'%%(name)s' reference: write a literal %% as %%%%"
                % (_through(chain), percent + 1))

        target = match.group(1).lower()
        if target in chain:
            raise InterpolationError(
                "%%(name)s references form a loop: %s"
                % " -> ".join(chain + [target]))
        if target not in values:
            raise InterpolationError(
                "%s%%(%s)s refers to key %s, which is not set: set it, or "
                "write a literal %% as %%%%"
                % (_through(chain), match.group(1), target))
        referenced.add(target)
        output.append(_expand(target, values, chain + [target], referenced))
        position = match.end()


def _through(chain):
    """Return where a problem is when it lies in a referenced key's value."""
    if len(chain) == 1:
        return ""
    return "in the value of %s, used through %s: " % (
        chain[-1], " -> ".join(chain))
