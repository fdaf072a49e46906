"""Logging: stderr or a rotating file, with the job name on every line."""

import logging
import logging.config
import logging.handlers
import os

FORMAT = "%(asctime)s %(process)d %(levelname)s %(job)s: %(message)s"

SKYLOG_FILES = ("./skylog.ini", "~/.skylog.ini", "/etc/skylog.ini")


class JobFilter(logging.Filter):
    """Puts the job name on every record as ``job``."""

    def __init__(self, job_name):
        super().__init__()
        self.job_name = job_name

    def filter(self, record):
        if not hasattr(record, "job"):
            record.job = self.job_name
        return True


def level_for(verbosity):
    """Return the log level for -v (positive) and -q (negative) counts."""
    if verbosity > 0:
        return logging.DEBUG
    if verbosity < 0:
        return logging.WARNING
    return logging.INFO


def _skylog_file():
    for name in SKYLOG_FILES:
        path = os.path.expanduser(name)
        if os.path.isfile(path):
            return path
    return None


def setup(job_name="master", verbosity=0, logfile=None, log_size=10485760,
          log_count=3, use_skylog=False):
    """Configure the root logger for this process, replacing earlier handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()

    skylog = _skylog_file() if use_skylog else None
    if skylog:
        logging.config.fileConfig(skylog, disable_existing_loggers=False)
        for handler in root.handlers:
            handler.addFilter(JobFilter(job_name))
        return

    if logfile:
        os.makedirs(os.path.dirname(os.path.abspath(logfile)), exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            logfile, maxBytes=log_size, backupCount=log_count)
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(JobFilter(job_name))
    root.addHandler(handler)
    root.setLevel(level_for(verbosity))


def relabel(job_name, verbosity=0):
    """Keep this process's log handlers but name JOB_NAME on every line.

    A worker without a logfile of its own writes where its master writes,
    which under -d is the master's --logfile rather than a closed stderr.
    """
    # NOTE: when that is a rotating file, each process rotates it on its own,
    # so lines written during a rotation can land in the rotated file.
    root = logging.getLogger()
    for handler in root.handlers:
        for old in [f for f in handler.filters if isinstance(f, JobFilter)]:
            handler.removeFilter(old)
        handler.addFilter(JobFilter(job_name))
    root.setLevel(level_for(verbosity))
