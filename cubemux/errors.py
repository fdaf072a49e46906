"""Error classes and the exit codes that a worker reports to the master."""

# Worker exit codes. The master restarts a worker after EXIT_CRASH with a
# backoff, and keeps the job in the fatal state after the others until the
# operator acts.
EXIT_OK = 0
EXIT_CRASH = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_LOST_POSITION = 4
EXIT_BAD_EVENT = 5

FATAL_EXIT_CODES = frozenset({EXIT_CONFIG, EXIT_LOST_POSITION, EXIT_BAD_EVENT})


class CubemuxError(Exception):
    """Base class of the errors that cubemux reports to the operator."""

    exit_code = EXIT_CRASH


class ConfigError(CubemuxError):
    """A job file is invalid. Carries every problem found, one per line."""

    exit_code = EXIT_CONFIG

    def __init__(self, problems):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class EventError(CubemuxError):
    """An event cannot be decoded or applied. The batch is not applied."""

    exit_code = EXIT_BAD_EVENT

    def __init__(self, message, ev_id=None, table=None):
        self.ev_id = ev_id
        self.table = table
        parts = []
        if ev_id is not None:
            parts.append("event %s" % ev_id)
        if table is not None:
            parts.append("table %s" % table)
        prefix = ", ".join(parts)
        super().__init__("%s: %s" % (prefix, message) if prefix else message)


class PartitionError(CubemuxError):
    """A partition name or template cannot be used."""

    exit_code = EXIT_CONFIG


class LostPosition(CubemuxError):
    """The destination's tick matches neither end of the batch."""

    exit_code = EXIT_LOST_POSITION
