"""COPY text encoding: the whole-line check agrees with encoding field by field."""

from hypothesis import given, settings
from hypothesis import strategies as st

from cubemux import copytext

values = st.lists(
    st.one_of(st.none(), st.text(max_size=6),
              st.sampled_from(["\\", "\\N", "\t", "\n", "\r", "a\\b", ""])),
    max_size=6,
)


def per_field(row):
    return "\t".join(copytext.encode_value(value) for value in row) + "\n"


@settings(max_examples=500)
@given(row=values)
def test_encode_row_matches_per_field(row):
    assert copytext.encode_row(row) == per_field(row)


def test_encode_row_escapes_specials():
    row = [None, "", "a\tb", "c\nd\re", "back\\slash", "\\N"]
    assert copytext.encode_row(row) == (
        "\\N\t\ta\\tb\tc\\nd\\re\tback\\\\slash\t\\\\N\n")
