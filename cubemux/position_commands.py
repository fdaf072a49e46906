"""Commands that move a job's position: rewind, reset and unregister.

Each takes the queue's advisory lock on the source first, the lock that a
running worker holds, so it refuses to act while the job runs anywhere.
"""

import sys

import psycopg2

from cubemux import config, logsetup, pgq, tracking
from cubemux.db import mask_dsn
from cubemux.errors import EXIT_CRASH, EXIT_OK


def add_commands(commands, add_verbosity):
    rewind = commands.add_parser(
        "rewind", help="move the queue position to the destination's tick",
        description="Move the consumer's position on the queue to the tick "
        "that the destination has completed. The job must be stopped.")
    reset = commands.add_parser(
        "reset", help="clear the destination's tick",
        description="Remove the completed tick from the destination, so the "
        "next batch is applied whatever the destination held. Rows may then "
        "be missing or doubled. The job must be stopped.")
    unregister = commands.add_parser(
        "unregister", help="remove the job's consumer from its queue",
        description="Unregister the job's consumer from its queue and clear "
        "its destination tick, as for a job that is removed for good: the "
        "queue stops keeping events for it. The job must be stopped.")
    for parser in (rewind, reset, unregister):
        parser.add_argument("file", metavar="FILE", help="job file")
        add_verbosity(parser)


def _connect(dsn, role):
    try:
        return psycopg2.connect(dsn, application_name="cubemux")
    except psycopg2.OperationalError as error:
        raise SystemExit("cannot connect to the %s database %s: %s"
                         % (role, mask_dsn(dsn), str(error).strip()))


class _StoppedJob:
    """Source and destination connections of a job that no worker runs.

    Holds the queue's advisory lock on the source until closed, so no worker
    can start applying in the meantime.
    """

    def __init__(self, job):
        self.job = job
        self.src = _connect(job.src_db, "source")
        if not pgq.try_queue_lock(self.src, job.pgq_queue_name, job.pgq_consumer_id):
            self.src.close()
            raise SystemExit(
                "job %s is running: a worker applies queue %s for consumer %s. "
                "Stop the job (or every master that runs it) first"
                % (job.job_name, job.pgq_queue_name, job.pgq_consumer_id))
        self.dst = _connect(job.dst_db, "destination")

    def close(self):
        self.src.close()
        self.dst.close()


def _open(args, verbosity, command):
    logsetup.setup(command, verbosity)
    return _StoppedJob(config.load_job(args.file))


def cmd_rewind(args, verbosity):
    stopped = _open(args, verbosity, "rewind")
    job = stopped.job
    try:
        tick = tracking.get_last_tick(stopped.dst, job.pgq_consumer_id)
        if tick is None:
            print("the destination has no tick for consumer %s: nothing to rewind to"
                  % job.pgq_consumer_id, file=sys.stderr)
            return EXIT_CRASH
        try:
            pgq.register_at(stopped.src, job.pgq_queue_name, job.pgq_consumer_id,
                            tick)
        except psycopg2.Error as error:
            print("rewinding consumer %s on queue %s to tick %d failed: %s"
                  % (job.pgq_consumer_id, job.pgq_queue_name, tick,
                     str(error).strip()), file=sys.stderr)
            return EXIT_CRASH
    finally:
        stopped.close()
    print("moved consumer %s on queue %s to tick %d"
          % (job.pgq_consumer_id, job.pgq_queue_name, tick))
    return EXIT_OK


def cmd_reset(args, verbosity):
    stopped = _open(args, verbosity, "reset")
    job = stopped.job
    try:
        tick = tracking.get_last_tick(stopped.dst, job.pgq_consumer_id)
        tracking.set_last_tick(stopped.dst, job.pgq_consumer_id, None)
        stopped.dst.commit()
    finally:
        stopped.close()
    if tick is None:
        print("the destination had no tick for consumer %s: nothing to clear"
              % job.pgq_consumer_id)
    else:
        print("cleared tick %d of consumer %s in the destination"
              % (tick, job.pgq_consumer_id))
    return EXIT_OK


def cmd_unregister(args, verbosity):
    stopped = _open(args, verbosity, "unregister")
    job = stopped.job
    try:
        removed = pgq.unregister(stopped.src, job.pgq_queue_name, job.pgq_consumer_id)
        tracking.set_last_tick(stopped.dst, job.pgq_consumer_id, None)
        stopped.dst.commit()
    finally:
        stopped.close()
    if removed:
        print("unregistered consumer %s from queue %s and cleared its destination "
              "tick" % (job.pgq_consumer_id, job.pgq_queue_name))
    else:
        print("consumer %s was not registered on queue %s"
              % (job.pgq_consumer_id, job.pgq_queue_name))
    return EXIT_OK
