"""The deadletter and replay commands."""

import json
import sys

import psycopg2

from cubemux import config, deadletter, logsetup
from cubemux.db import mask_dsn
from cubemux.errors import EXIT_CRASH, EXIT_OK


def add_commands(commands, add_verbosity):
    listing = commands.add_parser(
        "deadletter", help="list the events a job set aside",
        description="List the events that the job stored in cubemux.deadletter "
        "in its destination (on_error = deadletter), with the reason of each.")
    listing.add_argument("file", metavar="FILE", help="job file")
    listing.add_argument("--all", action="store_true",
                         help="include events that were replayed already")
    listing.add_argument("--json", action="store_true", help="print JSON lines")
    add_verbosity(listing)

    replay = commands.add_parser(
        "replay", help="apply a job's dead letters again",
        description="Apply the job's pending dead letters in one transaction, "
        "into the partitions of their batches, and mark them replayed. If one "
        "still fails, nothing is applied and the error names the event.")
    replay.add_argument("file", metavar="FILE", help="job file")
    replay.add_argument("--id", type=int, action="append", dest="ids", metavar="ID",
                        help="replay only this dead letter (the id column of "
                        "'cubemux deadletter'); repeat for more")
    replay.add_argument("--force", action="store_true",
                        help="under keep_latest, replace a row that has the "
                        "dead letter's key, which may be a newer version")
    add_verbosity(replay)


def cmd_deadletter(args, verbosity):
    logsetup.setup("deadletter", verbosity)
    job = config.load_job(args.file)
    try:
        conn = psycopg2.connect(job.dst_db, application_name="cubemux")
    except psycopg2.OperationalError as error:
        print("cannot connect to the destination database %s: %s"
              % (mask_dsn(job.dst_db), str(error).strip()), file=sys.stderr)
        return EXIT_CRASH
    try:
        rows = deadletter.pending(conn, job, include_replayed=args.all)
    finally:
        conn.close()
    for row in rows:
        if args.json:
            print(json.dumps(row, default=str))
        else:
            state = "replayed" if row["replayed_at"] else "pending"
            print("%d\tevent %d\t%s\t%s\t%s\t%s" % (
                row["id"], row["ev_id"], row["ev_extra1"], row["ev_type"], state,
                row["reason"]))
    if not args.json:
        print("dead letters: %d" % len(rows), file=sys.stderr)
    return EXIT_OK


def cmd_replay(args, verbosity):
    from cubemux.errors import CubemuxError
    from cubemux.replay import replay
    from cubemux.worker import describe_error

    job = config.load_job(args.file)
    logsetup.setup(job.job_name, verbosity)
    try:
        count = replay(job, args.ids, force=args.force)
    except (CubemuxError, psycopg2.Error) as error:
        print("replay failed, nothing was applied: %s" % describe_error(error, job),
              file=sys.stderr)
        return EXIT_CRASH
    print("replayed dead letters: %d" % count)
    return EXIT_OK
