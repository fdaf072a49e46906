"""The cubemux command line."""

import argparse
import logging
import sys

import psycopg2

from cubemux import (__version__, config, deadletter_commands, logsetup,
                     position_commands, service)
from cubemux.errors import (EXIT_CONFIG, EXIT_CRASH, EXIT_OK, EXIT_USAGE, ConfigError,
                            CubemuxError)
from cubemux.jobs import claim_consumer

log = logging.getLogger(__name__)


def _add_verbosity(parser):
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more: debug lines")
    parser.add_argument("-q", "--quiet", action="count", default=0,
                        help="log less: warnings and errors only")


def _port(text):
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            "invalid port %r: expected a whole number from 0 to 65535" % text)
    return port


def build_parser():
    parser = argparse.ArgumentParser(
        prog="cubemux",
        description="Run PgQ cube_dispatcher jobs: move logutriga events from "
        "queues into per-day or per-month partition tables.")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    start = commands.add_parser(
        "start", help="run the master: one worker per *.ini file in DIR",
        description="Run the master in the foreground. It forks one worker per "
        "*.ini job file in DIR and starts a worker again when it exits.")
    start.add_argument("directory", metavar="DIR", help="folder of job files")
    start.add_argument("--graceful-timeout", type=float, default=30.0,
                       metavar="SECONDS",
                       help="how long a stopping worker may finish its batch "
                       "before it is killed (default: 30)")
    start.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                       help="address on which to serve /metrics and /healthz "
                       "(default: 127.0.0.1)")
    start.add_argument("--metrics-port", type=_port, default=None, metavar="PORT",
                       help="TCP port on which to serve /metrics and /healthz; "
                       "0 picks a free port (default: no HTTP endpoint)")
    service.add_start_options(start)
    _add_verbosity(start)

    run = commands.add_parser(
        "run", help="run one job in the foreground",
        description="Run one job in the foreground, as cube_dispatcher.py ran. "
        "After a database error it retries with a backoff.")
    run.add_argument("file", metavar="FILE", help="job file")
    service.add_run_options(run)
    _add_verbosity(run)

    check = commands.add_parser(
        "check", help="validate job files",
        description="Validate a job file or every *.ini file in a folder. Print "
        "each problem and exit with a non-zero code when any file is invalid.")
    check.add_argument("path", metavar="DIR|FILE", help="job file or folder")
    _add_verbosity(check)

    init_dst = commands.add_parser(
        "init-dst", help="install the pgq_ext tracking schema in the destination",
        description="Install the pgq_ext tables and functions that keep the "
        "completed tick in the job's destination database. Safe to run again, "
        "and leaves an existing pgq_ext installation as it is.")
    init_dst.add_argument("file", metavar="FILE", help="job file")
    _add_verbosity(init_dst)

    position_commands.add_commands(commands, _add_verbosity)
    service.add_control_commands(commands, _add_verbosity)
    deadletter_commands.add_commands(commands, _add_verbosity)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    verbosity = args.verbose - args.quiet
    handler = COMMANDS[args.command]
    try:
        return handler(args, verbosity)
    except ConfigError as error:
        print(str(error), file=sys.stderr)
        return EXIT_CONFIG
    except CubemuxError as error:
        print(str(error), file=sys.stderr)
        return error.exit_code
    except OSError as error:
        # A pidfile, log file or socket path that cannot be made or opened.
        print("cubemux %s failed: %s" % (args.command, error), file=sys.stderr)
        return EXIT_CRASH
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_start(args, verbosity):
    metrics_address = None
    if args.metrics_port is not None:
        metrics_address = (args.metrics_host, args.metrics_port)
    return service.cmd_start(args, verbosity, metrics_address)


def cmd_run(args, verbosity):
    return service.cmd_run(args, verbosity)


def cmd_check(args, verbosity):
    import os

    if os.path.isdir(args.path):
        paths = config.job_files(args.path)
        if not paths:
            print("%s: no *.ini job files found" % args.path, file=sys.stderr)
            return EXIT_CONFIG
    else:
        paths = [args.path]

    failed = 0
    owners = {}
    for path in paths:
        try:
            job = config.load_job(path)
        except ConfigError as error:
            failed += 1
            print(str(error), file=sys.stderr)
            continue
        conflict = claim_consumer(job, path, owners)
        if conflict is not None:
            failed += 1
            print(conflict, file=sys.stderr)
            continue
        for warning in job.warnings:
            print("warning: %s" % warning, file=sys.stderr)
        if verbosity >= 0:
            print("%s: ok (job %s, queue %s, mode %s)"
                  % (path, job.job_name, job.pgq_queue_name, job.mode))
    return EXIT_CONFIG if failed else EXIT_OK


def _admin_connection(dsn, role):
    from cubemux.db import mask_dsn

    try:
        return psycopg2.connect(dsn, application_name="cubemux")
    except psycopg2.OperationalError as error:
        raise SystemExit("cannot connect to the %s database %s: %s"
                         % (role, mask_dsn(dsn), str(error).strip()))


def cmd_init_dst(args, verbosity):
    from cubemux import tracking

    logsetup.setup("init-dst", verbosity)
    job = config.load_job(args.file)
    conn = _admin_connection(job.dst_db, "destination")
    try:
        tracking.install_schema(conn)
    finally:
        conn.close()
    print("pgq_ext tracking schema is installed in the destination of job %s"
          % job.job_name)
    return EXIT_OK


COMMANDS = {
    "start": cmd_start,
    "run": cmd_run,
    "check": cmd_check,
    "init-dst": cmd_init_dst,
    "rewind": position_commands.cmd_rewind,
    "reset": position_commands.cmd_reset,
    "unregister": position_commands.cmd_unregister,
    "stop": service.cmd_signal,
    "reload": service.cmd_signal,
    "kill": service.cmd_signal,
    "status": service.cmd_status,
    "restart": service.cmd_restart,
    "deadletter": deadletter_commands.cmd_deadletter,
    "replay": deadletter_commands.cmd_replay,
}

if __name__ == "__main__":
    sys.exit(main())
