"""The states of a job under the master."""

STARTING = "starting"
RUNNING = "running"
BACKOFF = "backoff"
STOPPING = "stopping"
STOPPED = "stopped"
FATAL = "fatal"

ALL = (STARTING, RUNNING, BACKOFF, STOPPING, STOPPED, FATAL)
