"""Measure url-decoding and COPY encoding of the benchmark's rows, in-process.

Prints microseconds per row for decoding ev_data field by field in Python
and as a whole row with skytools' C decoder, for COPY encoding field by
field and with the whole-line check, and for cubemux's C encoder, which
turns ev_data into the COPY line in one step. The rows are those that the
wide and narrow tables of the workload produce. Needs no database.

Usage: .venv/bin/python benchmarks/codec.py
"""

import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cubemux import _rowcopy, copytext, events, rowdecode  # noqa: E402

# ev_data as logutriga writes it for rows of the workload's tables.
ROWS = {
    "wide": "id=3&account_id=3&amount=237.57&price=0.375&quantity=3&is_active=f"
            "&currency=EUR&name=customer+3&note=%c3%95unapuu+%c3%a4%c3%a4r+3+%f0%9f"
            "%8d%8e&created_at=2024-01-01+00%3a00%3a03%2b00&valid_on=2024-01-04"
            "&tags=%7bt3%2ct3%7d&attributes=%7b%22k%22%3a+3%2c+%22s%22%3a+%22v3%22"
            "%7d&ref=eccbc87e-4b5c-e2fe-2830-8fd9f2a7baf3&ratio=0.003",
    "wide with NULL": "id=1&account_id=1&amount=79.19&price=0.125&quantity=1"
                      "&is_active=t&currency=USD&name=customer+1&note&created_at"
                      "=2024-01-01+00%3a00%3a01%2b00&valid_on=2024-01-02&tags=%7bt1"
                      "%2ct1%7d&attributes=%7b%22k%22%3a+1%2c+%22s%22%3a+%22v1%22%7d"
                      "&ref=c4ca4238-a0b9-2382-0dcc-509a6f75849b&ratio=0.001",
    "narrow": "id=1&quantity=1&name=item-1",
}

REPEAT = 5
NUMBER = 20000


def per_row(function):
    """Return the best time of FUNCTION in microseconds per call."""
    return min(timeit.repeat(function, number=NUMBER, repeat=REPEAT)) / NUMBER * 1e6


def python_decode(data):
    """Decode DATA field by field, with the C decoder switched off."""
    saved = rowdecode.db_urldecode
    rowdecode.db_urldecode = None
    try:
        return events.decode_row(data)
    finally:
        rowdecode.db_urldecode = saved


def per_field_encode(values):
    return "\t".join([copytext.encode_value(value) for value in values]) + "\n"


def main():
    if not rowdecode.AVAILABLE:
        raise SystemExit("skytools' C module is not installed: pip install skytools")
    decoders = {"Python": python_decode, "skytools": rowdecode.decode_row}
    print("microseconds per row; decode with each decoder, then COPY encoding")
    print("%-16s" % "row" + "".join("%11s" % name for name in decoders)
          + "%11s%11s%11s" % ("per field", "per line", "C line"))
    for name, data in ROWS.items():
        values = python_decode(data)[1]
        figures = [per_row(lambda decode=decode: decode(data))
                   for decode in decoders.values()]
        figures.append(per_row(lambda: per_field_encode(values)))
        figures.append(per_row(lambda: copytext.encode_row(values)))
        figures.append(per_row(lambda: _rowcopy.encode(data)))
        print("%-16s" % name + "".join("%11.2f" % figure for figure in figures))


if __name__ == "__main__":
    main()
