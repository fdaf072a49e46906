"""Exponential backoff with jitter, for restarting jobs after failures."""

import random

INITIAL_DELAY = 1.0
FACTOR = 2.0
JITTER = 0.1
DEFAULT_CAP = 60.0


class Backoff:
    """Delays of 1 s, 2 s, 4 s ... up to CAP seconds.

    Each delay below the cap is up to 10 % longer than its base. A delay at
    the cap is up to 10 % shorter than the cap, so jobs that failed together
    (a database restart) do not all retry in the same second.
    """

    def __init__(self, cap=DEFAULT_CAP, rng=random.random):
        self.cap = cap
        self.failures = 0
        self._rng = rng

    def next_delay(self):
        """Count one more failure and return the seconds to wait before retrying."""
        base = INITIAL_DELAY * FACTOR ** min(self.failures, 64)
        self.failures += 1
        delay = base * (1.0 + JITTER * self._rng())
        if delay > self.cap:
            delay = self.cap * (1.0 - JITTER * self._rng())
        return max(delay, min(INITIAL_DELAY, self.cap))

    def reset(self):
        """Start again from the initial delay, after a healthy run."""
        self.failures = 0
