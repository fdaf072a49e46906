"""The states of a job under the master, and the transitions between them."""

STARTING = "starting"
RUNNING = "running"
BACKOFF = "backoff"
STOPPING = "stopping"
STOPPED = "stopped"
FATAL = "fatal"

ALL = (STARTING, RUNNING, BACKOFF, STOPPING, STOPPED, FATAL)

# States in which the job has a worker process.
WITH_WORKER = frozenset({STARTING, RUNNING, STOPPING})

# The edges that JobSlot.change_state() accepts without logging an error.
# An edge into BACKOFF from a state without a worker is a failed fork.
TRANSITIONS = {
    STOPPED: frozenset({STARTING, BACKOFF, FATAL}),
    STARTING: frozenset({RUNNING, BACKOFF, FATAL, STOPPING}),
    RUNNING: frozenset({BACKOFF, FATAL, STOPPING}),
    BACKOFF: frozenset({STARTING, BACKOFF, STOPPED}),
    STOPPING: frozenset({STOPPED}),
    FATAL: frozenset({STARTING, BACKOFF, STOPPED}),
}
