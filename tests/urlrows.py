"""Hypothesis strategies for url-encoded rows, as logutriga writes them and worse."""

from urllib.parse import quote

from hypothesis import strategies as st

# Pieces that url-encoded rows are made of, and the ways they go wrong.
PIECES = ["&", "=", "%", "+", "a", "b", "id", "%41", "%e2%82%ac", "%C3%95", "%zz",
          "%4", "%ff", "%00", "%5c", "%09", "Õ", "\x00", "-", "%2d", "%26", "%3d",
          "%ed%a0%80", "%c3"]


def raw_text(pieces=PIECES, max_size=12):
    """Return a strategy for text joined from PIECES."""
    return st.lists(st.sampled_from(pieces), max_size=max_size).map("".join)


names = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=6)
values = st.one_of(st.none(), st.text(st.characters(blacklist_categories=["Cs"]),
                                      max_size=8))
rows = st.lists(st.tuples(names, values), max_size=6)


def encode(pairs):
    """Url-encode (name, value) PAIRS into a row. A value of None is NULL."""
    parts = []
    for name, value in pairs:
        name = quote(name, safe="")
        parts.append(name if value is None else name + "=" + quote(value, safe=""))
    return "&".join(parts)
