"""The ini reader: configparser's syntax, collected problems, interpolation."""

import configparser
import io

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cubemux.iniformat import InterpolationError, interpolate, parse_ini


def values_of(text, section="s"):
    parsed = parse_ini(text)
    return {key: setting.value for key, setting in parsed.sections[section].items()}


# Syntax.


def test_parse_equals_and_colon():
    values = values_of("[s]\na = 1\nb: 2\nc=3\nd:4\n")
    assert values == {"a": "1", "b": "2", "c": "3", "d": "4"}


def test_parse_first_delimiter_ends_key():
    values = values_of("[s]\na = b: c = d\ne: f = g\n")
    assert values["a"] == "b: c = d"
    assert values["e"] == "f = g"


def test_parse_keys_lower_case():
    values = values_of("[s]\nLoop_Delay = 5\n")
    assert values == {"loop_delay": "5"}


def test_parse_key_with_spaces():
    values = values_of("[s]\n  my key   =   spaced value  \n")
    assert values == {"my key": "spaced value"}


def test_parse_empty_value():
    values = values_of("[s]\ndateformat =\nother:\n")
    assert values == {"dateformat": "", "other": ""}


def test_parse_comment_lines_skipped():
    text = "# top\n[s]\n; semicolon\na = 1\n    # indented\n\t; tab\nb = 2\n"
    parsed = parse_ini(text)
    assert parsed.errors == []
    assert values_of(text) == {"a": "1", "b": "2"}


def test_parse_hash_after_value_kept():
    values = values_of("[s]\nsrc_db = dbname=x password=ab#c ; not a comment\n")
    assert values["src_db"] == "dbname=x password=ab#c ; not a comment"


def test_parse_continuation_lines_joined():
    text = "[s]\npart_template =\n     create table x;\n     alter table x;\nb = 1\n"
    values = values_of(text)
    assert values["part_template"] == "\ncreate table x;\nalter table x;"
    assert values["b"] == "1"


def test_parse_continuation_keeps_inner_blank():
    text = "[s]\na = one\n  two\n\n  three\n\n\nb = 2\n"
    values = values_of(text)
    assert values["a"] == "one\ntwo\n\nthree"


def test_parse_continuation_skips_comments():
    text = "[s]\na = one\n  # inside\n  two\n; between\n  three\n"
    assert values_of(text)["a"] == "one\ntwo\nthree"


def test_parse_continuation_relative_to_key():
    text = "    [s]\n    a = 1\n    b = 2\n       more\n  c = 3\n"
    parsed = parse_ini(text)
    assert parsed.errors == []
    assert values_of(text) == {"a": "1", "b": "2\nmore", "c": "3"}


def test_parse_continuation_records_line():
    parsed = parse_ini("[s]\na = 1\n\n   b = 2\n")
    setting = parsed.sections["s"]["a"]
    assert setting.value == "1\n\nb = 2"
    assert setting.lineno == 2
    assert setting.continued_at == 4


def test_parse_indented_line_after_header():
    # An indented line right after a header starts a key: there is no value
    # to continue yet.
    assert values_of("[s]\n   a = 1\n") == {"a": "1"}


def test_parse_crlf_free_text_lines():
    assert values_of("[s]\na = 1\r\n".replace("\r\n", "\n")) == {"a": "1"}


def test_parse_header_trailing_text_ignored():
    # configparser takes the name up to the last ']' and ignores the rest.
    parsed = parse_ini("[s] ; comment\na = 1\n")
    assert list(parsed.sections) == ["s"]


def test_parse_default_section_kept():
    parsed = parse_ini("[DEFAULT]\nx = 1\n[s]\ny = 2\n")
    assert parsed.sections["DEFAULT"]["x"].value == "1"
    assert parsed.sections["s"]["y"].value == "2"


def test_parse_triple_quoted_multiline():
    text = "[s]\nt = '''create table x;\n  # kept\n\nalter table x;'''\nb = 1\n"
    values = values_of(text)
    assert values["t"] == "create table x;\n  # kept\n\nalter table x;"
    assert values["b"] == "1"


def test_parse_triple_quoted_one_line():
    values = values_of('[s]\nt = """a = b"""\n')
    assert values["t"] == "a = b"


def test_parse_triple_quoted_marks_setting():
    setting = parse_ini("[s]\nt = '''a\nb'''\n").sections["s"]["t"]
    assert setting.quoted is True
    assert setting.lineno == 2


def test_parse_line_numbers_recorded():
    parsed = parse_ini("# c\n[s]\n\na = 1\nb = '''x\ny'''\nc = 3\n")
    lines = {key: setting.lineno for key, setting in parsed.sections["s"].items()}
    assert lines == {"a": 4, "b": 5, "c": 7}


# Problems.


def test_error_key_before_section():
    parsed = parse_ini("a = 1\n[s]\nb = 2\n")
    assert len(parsed.errors) == 1
    assert parsed.errors[0][0] == 1
    assert "[cube_dispatcher]" in parsed.errors[0][1]


def test_error_line_without_delimiter():
    parsed = parse_ini("[s]\na = 1\nno delimiter here\n")
    assert parsed.errors[0][0] == 3
    assert "'no delimiter here'" in parsed.errors[0][1]
    assert "key = value" in parsed.errors[0][1]


def test_error_empty_key_name():
    parsed = parse_ini("[s]\n= value\n")
    assert parsed.errors[0][0] == 2
    assert "no key name" in parsed.errors[0][1]


def test_error_unclosed_triple_quote():
    parsed = parse_ini("[s]\nt = '''create\nmore\n")
    assert parsed.errors[0][0] == 2
    assert "never closed" in parsed.errors[0][1]


def test_error_text_after_triple_quote():
    parsed = parse_ini("[s]\nt = '''a\nb''' junk\n")
    assert parsed.errors[0][0] == 3
    assert "'junk'" in parsed.errors[0][1]


def test_errors_all_collected():
    parsed = parse_ini("orphan = 1\n[s]\nbad line\n= x\nalso bad\n")
    assert [line for line, _ in parsed.errors] == [1, 3, 4, 5]


def test_warning_duplicate_key():
    parsed = parse_ini("[s]\na = 1\na = 2\n")
    assert parsed.sections["s"]["a"].value == "2"
    assert parsed.warnings[0][0] == 3
    assert "first on line 2" in parsed.warnings[0][1]


def test_warning_duplicate_key_case():
    parsed = parse_ini("[s]\nmode = keep_all\nMODE = keep_latest\n")
    assert parsed.sections["s"]["mode"].value == "keep_latest"
    assert len(parsed.warnings) == 1


def test_warning_duplicate_section_merged():
    parsed = parse_ini("[s]\na = 1\n[t]\n[s]\nb = 2\n")
    assert values_of("[s]\na = 1\n[t]\n[s]\nb = 2\n") == {"a": "1", "b": "2"}
    assert parsed.warnings[0][0] == 4
    assert "first on line 1" in parsed.warnings[0][1]


# Interpolation.


def test_interpolate_reference():
    values = {"job_name": "cube", "logfile": "~/log/%(job_name)s.log"}
    assert interpolate("logfile", values) == "~/log/cube.log"


def test_interpolate_double_percent():
    values = {"src_db": "password=a%%b%%"}
    assert interpolate("src_db", values) == "password=a%b%"


def test_interpolate_nested_reference():
    values = {"a": "%(b)s/x", "b": "%(c)s/y", "c": "z%%"}
    assert interpolate("a", values) == "z%/y/x"


def test_interpolate_reference_case_insensitive():
    values = {"a": "%(Job_Name)s", "job_name": "cube"}
    assert interpolate("a", values) == "cube"


def test_interpolate_records_referenced():
    referenced = set()
    interpolate("a", {"a": "%(b)s", "b": "%(c)s", "c": "1"}, referenced)
    assert referenced == {"b", "c"}


def test_interpolate_missing_key():
    with pytest.raises(InterpolationError) as raised:
        interpolate("logfile", {"logfile": "%(nosuch)s.log"})
    assert "%(nosuch)s" in str(raised.value)
    assert "not set" in str(raised.value)


def test_interpolate_missing_nested_key():
    with pytest.raises(InterpolationError) as raised:
        interpolate("a", {"a": "%(b)s", "b": "%(c)s"})
    assert "a -> b" in str(raised.value)


def test_interpolate_loop():
    with pytest.raises(InterpolationError) as raised:
        interpolate("a", {"a": "%(b)s", "b": "%(a)s"})
    assert "a -> b -> a" in str(raised.value)


@pytest.mark.parametrize("raw", ["50%", "a%b", "%(x)d", "%(", "%()s", "100%x"])
def test_interpolate_bad_percent(raw):
    with pytest.raises(InterpolationError) as raised:
        interpolate("key", {"key": raw, "x": "1"})
    assert "%%" in str(raised.value)


def test_interpolate_error_hides_value():
    with pytest.raises(InterpolationError) as raised:
        interpolate("src_db", {"src_db": "password=s3cr%t"})
    assert "s3cr" not in str(raised.value)
    assert "character 14" in str(raised.value)


# Agreement with configparser on text that both read.

_TOKENS = ["[s]", "[t]", "[DEFAULT]", "[", "]", "a", "B", "=", ":", " ", "\t",
           "#", ";", "%", "\x0c", "\xa0"]

_LINES = st.lists(st.sampled_from(_TOKENS), max_size=6).map("".join)

_TEXTS = st.lists(_LINES, max_size=12).map(lambda lines: "\n".join(["[s]"] + lines))


def _configparser_values(text):
    parser = configparser.RawConfigParser(strict=False)
    parser.read_file(io.StringIO(text))
    result = {}
    for section in parser.sections():
        result[section] = {
            key: parser.get(section, key) for key in parser.options(section)
        }
    return result, parser.defaults()


def _own_values(parsed):
    defaults = parsed.sections.get("DEFAULT", {})
    result = {}
    for name, section in parsed.sections.items():
        if name == "DEFAULT":
            continue
        merged = dict(defaults)
        merged.update(section)
        result[name] = {key: setting.value for key, setting in merged.items()}
    return result, {key: setting.value for key, setting in defaults.items()}


@settings(max_examples=500)
@given(_TEXTS)
@example("[s]\na = 1\n  b\n\n  c\n\n[DEFAULT]\nd: 2\n")
@example("[s]\n   a = 1\n b = 2\n  c\n")
def test_parse_agrees_with_configparser(text):
    parsed = parse_ini(text)
    try:
        expected = _configparser_values(text)
    except configparser.Error:
        assert parsed.errors != []
        return
    assert parsed.errors == []
    assert _own_values(parsed) == expected


_NAMES = st.sampled_from(["a", "b", "c", "D"])
_RAW_VALUES = st.text("xy%()sabcD", max_size=12)


@settings(max_examples=500)
@given(st.dictionaries(_NAMES.map(str.lower), _RAW_VALUES, min_size=1))
def test_interpolate_agrees_with_configparser(values):
    # Reading a file skips the syntax check of set(), so get() meets it.
    parser = configparser.ConfigParser()
    lines = ["%s = %s" % (key, value) for key, value in values.items()]
    parser.read_string("\n".join(["[s]"] + lines))
    for key in values:
        try:
            expected = parser.get("s", key)
        except configparser.InterpolationError:
            expected = None
        try:
            actual = interpolate(key, values)
        except InterpolationError:
            actual = None
        assert actual == expected
