"""cubemux as a host service: pidfiles, daemon mode and the control commands.

``start`` and ``run`` take the original script's switches: -d detaches,
-s (SIGINT) stops, -r (SIGHUP) reloads and -k sends SIGTERM to the process
named in the pidfile. ``stop``, ``reload`` and ``kill`` send the same
signals; ``status`` and ``restart`` talk to the master's control socket.
"""

import json
import logging
import os
import signal
import sys
import time

from cubemux import config, logsetup
from cubemux.control import (
    ControlError,
    ControlServer,
    default_socket_path,
    send_request,
)
from cubemux.daemon import daemonize
from cubemux.errors import EXIT_CONFIG, EXIT_CRASH, EXIT_OK, EXIT_USAGE, CubemuxError
from cubemux.pidfile import NotRunning, PidFile, live_pid, signal_owner

log = logging.getLogger(__name__)

# The signal that each switch and control command sends.
SWITCH_SIGNALS = {
    "stop": signal.SIGINT,
    "reload": signal.SIGHUP,
    "kill": signal.SIGTERM,
}


# Command line options.


def add_switches(parser, pidfile_source):
    """Add -d, -s, -r and -k. PIDFILE_SOURCE names where the pidfile comes from."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-d", "--daemon", action="store_true",
                       help="detach and run in the background; needs %s"
                       % pidfile_source)
    group.add_argument("-s", "--stop", dest="switch", action="store_const",
                       const="stop", help="stop the running process gracefully "
                       "(SIGINT to the pid in %s)" % pidfile_source)
    group.add_argument("-r", "--reload", dest="switch", action="store_const",
                       const="reload", help="make the running process reload its "
                       "job files (SIGHUP to the pid in %s)" % pidfile_source)
    group.add_argument("-k", "--kill", dest="switch", action="store_const",
                       const="kill", help="send SIGTERM to the pid in %s; it "
                       "stops as gracefully as -s" % pidfile_source)


def add_start_options(parser):
    add_switches(parser, "--pidfile")
    parser.add_argument("--pidfile", metavar="FILE",
                        help="write the master's pid to FILE and keep it locked "
                        "while the master runs")
    _add_socket_option(parser)
    parser.add_argument("--logfile", metavar="FILE",
                        help="write the master's log to FILE, rotated at 10 MiB "
                        "(default: stderr)")


def add_run_options(parser):
    add_switches(parser, "the job file's pidfile key")


def _add_socket_option(parser):
    parser.add_argument("--control-socket", metavar="PATH",
                        help="unix socket of the master's status and restart "
                        "requests (default: next to --pidfile as NAME.sock, else "
                        "cubemux.sock in $XDG_RUNTIME_DIR/cubemux, /run/cubemux "
                        "for root, or /tmp/cubemux-UID)")


def add_control_commands(commands, add_verbosity):
    """Add the stop, reload, kill, status and restart subcommands."""
    helps = {
        "stop": "stop the master gracefully (SIGINT)",
        "reload": "make the master reload its job folder (SIGHUP)",
        "kill": "send SIGTERM to the master; it stops as gracefully as stop",
    }
    for name, text in helps.items():
        parser = commands.add_parser(name, help=text, description=text + ".")
        parser.add_argument("--pidfile", metavar="FILE", required=True,
                            help="pidfile of the master or of 'cubemux run'")
        if name != "reload":
            parser.add_argument("--wait", type=float, metavar="SECONDS",
                                help="wait up to SECONDS for the process to exit")
        add_verbosity(parser)

    status = commands.add_parser(
        "status", help="show the state of every job of a running master",
        description="Show each job's state, worker pid, uptime, restarts, the age "
        "of its last batch and its consumer lag, read from the master's control "
        "socket.")
    _add_master_address(status)
    status.add_argument("--json", action="store_true",
                        help="print the master's full response as JSON")
    add_verbosity(status)

    restart = commands.add_parser(
        "restart", help="start one job again, a fatal one included",
        description="Start one job of a running master again. A running worker "
        "finishes its batch and exits first. Other jobs are not touched.")
    restart.add_argument("job", metavar="JOB", help="job name or job file name")
    _add_master_address(restart)
    add_verbosity(restart)


def _add_master_address(parser):
    _add_socket_option(parser)
    parser.add_argument("--pidfile", metavar="FILE",
                        help="the master's pidfile; its control socket is the "
                        "NAME.sock next to it")


def _socket_path(args):
    if args.control_socket:
        return args.control_socket
    return default_socket_path(args.pidfile)


def _fail(error):
    print("cubemux: %s" % error, file=sys.stderr)
    return error.exit_code if isinstance(error, CubemuxError) else EXIT_CRASH


# start and run.


def cmd_start(args, verbosity, metrics_address=None):
    if args.switch:
        if not args.pidfile:
            print("cubemux: -%s needs the master's --pidfile FILE" % args.switch[0],
                  file=sys.stderr)
            return EXIT_USAGE
        return send_switch(args.pidfile, args.switch)
    if args.daemon and not args.pidfile:
        print("cubemux: -d needs a pidfile: give --pidfile FILE", file=sys.stderr)
        return EXIT_USAGE
    if os.path.isfile(args.directory):
        print("cubemux: %s is a job file, and start takes the folder of job files: "
              "run 'cubemux start %s', or 'cubemux run %s' for this job alone"
              % (args.directory, os.path.dirname(args.directory) or ".",
                 args.directory), file=sys.stderr)
        return EXIT_USAGE
    if not os.path.isdir(args.directory):
        print("cubemux: %s: job folder not found" % args.directory, file=sys.stderr)
        return EXIT_CONFIG
    try:
        return run_master(args.directory, verbosity, args.graceful_timeout,
                          metrics_address, pidfile=args.pidfile,
                          control_socket=args.control_socket, daemon=args.daemon,
                          logfile=args.logfile)
    except CubemuxError as error:
        return _fail(error)


def run_master(directory, verbosity=0, graceful_timeout=30.0, metrics_address=None,
               pidfile=None, control_socket=None, daemon=False, logfile=None):
    """Run the master of DIRECTORY until it stops. Return its exit code.

    The pidfile and the control socket are taken before a daemon detaches,
    so a second master fails with a message on the terminal. Raise
    CubemuxError when the pidfile or a given CONTROL_SOCKET is in use. A
    master on the default socket path runs without control socket when that
    path is in use, because several masters may share a host.
    """
    from cubemux.master import Master

    directory = os.path.abspath(directory)
    logsetup.setup("master", verbosity, logfile and os.path.abspath(logfile))
    lock = PidFile(pidfile) if pidfile else None
    control = None
    try:
        if lock is not None:
            lock.acquire()
        control = _open_control_socket(control_socket, pidfile)
        report_ready = None
        if daemon:
            report_ready = daemonize()
            lock.write(os.getpid())
        master = Master(directory, verbosity, graceful_timeout,
                        metrics_address=metrics_address, control_server=control,
                        on_started=report_ready)
        return master.run()
    except (CubemuxError, SystemExit) as error:
        # After -d the terminal is gone, so the log is the only place for it.
        log.error("master failed to start: %s", error)
        raise
    except Exception:
        log.exception("master failed")
        raise
    finally:
        if control is not None:
            control.close()
        if lock is not None:
            lock.release()


def _open_control_socket(path, pidfile):
    if path:
        return ControlServer(path)
    path = default_socket_path(pidfile)
    try:
        return ControlServer(path)
    except ControlError as error:
        log.warning("running without control socket, so 'cubemux status' and "
                    "'cubemux restart' cannot reach this master: %s", error)
        return None


def cmd_run(args, verbosity):
    from cubemux.jobrun import run_job

    job = config.load_job(args.file)
    if args.switch or args.daemon:
        if not job.pidfile:
            print("cubemux: -%s needs a pidfile: set pidfile in [%s] of %s"
                  % ("d" if args.daemon else args.switch[0], config.SECTION,
                     args.file), file=sys.stderr)
            return EXIT_USAGE
    if args.switch:
        return send_switch(job.pidfile, args.switch)

    logsetup.setup(job.job_name, verbosity, job.logfile, job.log_size,
                   job.log_count, job.use_skylog)
    for warning in job.warnings:
        log.warning("%s", warning)
    lock = PidFile(job.pidfile) if job.pidfile else None
    try:
        if lock is not None:
            lock.acquire()
        if args.daemon:
            report_ready = daemonize()
            lock.write(os.getpid())
            report_ready()
        return run_job(job, retry=True,
                       reload_job=lambda: config.load_job(args.file))
    except CubemuxError as error:
        log.error("%s", error)
        return _fail(error)
    finally:
        if lock is not None:
            lock.release()


# Signals and control requests.


def send_switch(pidfile, switch, wait=None):
    """Send the signal of SWITCH to the owner of PIDFILE. Return an exit code."""
    signum = SWITCH_SIGNALS[switch]
    try:
        pid = signal_owner(pidfile, signum)
    except NotRunning as error:
        return _fail(error)
    print("sent %s to pid %d" % (signal.Signals(signum).name, pid))
    if wait is None:
        return EXIT_OK
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            live_pid(pidfile)
        except NotRunning:
            print("pid %d has exited" % pid)
            return EXIT_OK
        time.sleep(0.1)
    print("cubemux: pid %d still runs after %.0f s" % (pid, wait), file=sys.stderr)
    return EXIT_CRASH


def cmd_signal(args, verbosity):
    return send_switch(args.pidfile, args.command, getattr(args, "wait", None))


def cmd_status(args, verbosity):
    try:
        response = send_request(_socket_path(args), {"command": "status"})
    except CubemuxError as error:
        return _fail(error)
    if args.json:
        print(json.dumps(response, indent=2, sort_keys=True))
    elif response.get("ok"):
        print(format_status(response, time.time()))
    if not response.get("ok"):
        print("cubemux: %s" % response.get("error"), file=sys.stderr)
        return EXIT_CRASH
    return EXIT_OK


def cmd_restart(args, verbosity):
    try:
        response = send_request(_socket_path(args),
                              {"command": "restart", "job": args.job})
    except CubemuxError as error:
        return _fail(error)
    if not response.get("ok"):
        print("cubemux: %s" % response.get("error"), file=sys.stderr)
        return EXIT_CRASH
    print(response.get("message"))
    return EXIT_OK


# The status table.

STATUS_COLUMNS = ("JOB", "STATE", "PID", "UPTIME", "RESTARTS", "LAST BATCH", "LAG",
                  "INFO")


def format_status(response, now):
    """Return a master's status response as a header line and a table."""
    master = response["master"]
    jobs = response["jobs"]
    header = "master pid %d, up %s, %d job%s in %s%s" % (
        master["pid"], format_age(now - master["started_at"]), len(jobs),
        "" if len(jobs) == 1 else "s", master["directory"],
        ", stopping" if master.get("stopping") else "")
    rows = [STATUS_COLUMNS] + [_status_row(job, now) for job in jobs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(STATUS_COLUMNS))]
    lines = [header]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _status_row(job, now):
    uptime = "-"
    if job["pid"] is not None and job["started_at"] is not None:
        uptime = format_age(now - job["started_at"])
    last_batch = "-"
    if job["last_batch_time"] is not None:
        last_batch = format_age(now - job["last_batch_time"])
    lag = "-"
    figures = job.get("queue_figures") or {}
    if job["pid"] is not None and figures.get("consumer_lag_seconds") is not None:
        lag = format_age(figures["consumer_lag_seconds"])
    return (job["name"], job["state"], str(job["pid"] or "-"), uptime,
            str(job["restarts"]), last_batch, lag, _status_info(job, now))


def _status_info(job, now):
    if job["state"] in ("backoff", "fatal", "stopping", "stopped"):
        return job["message"]
    notes = []
    if job.get("standby"):
        notes.append("standby: another worker holds the queue")
    if job.get("batch_open_since") is not None:
        notes.append("batch open for %s" % format_age(now - job["batch_open_since"]))
    return "; ".join(notes)


def format_age(seconds):
    """Return SECONDS as a short duration: 0.4s, 42s, 12m03s, 5h07m, 3d04h."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return "%.1fs" % seconds
    seconds = int(seconds)
    if seconds < 60:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm%02ds" % divmod(seconds, 60)
    if seconds < 86400:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dd%02dh" % (seconds // 86400, seconds % 86400 // 3600)
