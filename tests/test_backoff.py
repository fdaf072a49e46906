"""Backoff delays: doubling from 1 s, the cap, jitter and reset."""

from cubemux.backoff import Backoff


def delays(backoff, count):
    return [backoff.next_delay() for _ in range(count)]


def test_backoff_doubles_from_one_second():
    backoff = Backoff(cap=60, rng=lambda: 0.0)
    assert delays(backoff, 8) == [1, 2, 4, 8, 16, 32, 60, 60]


def test_backoff_jitter_stays_within_ten_percent():
    backoff = Backoff(cap=60, rng=lambda: 1.0)
    assert delays(backoff, 6) == [1.1, 2.2, 4.4, 8.8, 17.6, 35.2]


def test_backoff_at_cap_jitters_below_it():
    backoff = Backoff(cap=10, rng=lambda: 1.0)
    result = delays(backoff, 6)
    assert result[:4] == [1.1, 2.2, 4.4, 8.8]
    assert result[4:] == [9.0, 9.0]
    assert max(result) <= 10


def test_backoff_never_below_initial_delay():
    backoff = Backoff(cap=1, rng=lambda: 1.0)
    assert delays(backoff, 3) == [1.0, 1.0, 1.0]


def test_backoff_reset_starts_again():
    backoff = Backoff(cap=60, rng=lambda: 0.0)
    delays(backoff, 5)
    backoff.reset()
    assert backoff.next_delay() == 1


def test_backoff_survives_many_failures():
    # A database that stays down for weeks: 2.0 ** 1100 would overflow a float.
    backoff = Backoff(cap=60, rng=lambda: 0.5)
    for _ in range(2000):
        delay = backoff.next_delay()
    assert 54 <= delay <= 60
