"""Exponential backoff with jitter, for restarting jobs after failures."""

import random

INITIAL_DELAY = 1.0
FACTOR = 2.0
JITTER = 0.1
DEFAULT_CAP = 60.0


class Backoff:
    """Delays of 1 s, 2 s, 4 s ... up to CAP, each with up to 10 % jitter."""

    def __init__(self, cap=DEFAULT_CAP, rng=random.random):
        self.cap = cap
        self.failures = 0
        self._rng = rng

    def next_delay(self):
        """Count one more failure and return how long to wait before retrying."""
        base = min(self.cap, INITIAL_DELAY * FACTOR ** self.failures)
        self.failures += 1
        return base * (1.0 + JITTER * self._rng())

    def reset(self):
        self.failures = 0
