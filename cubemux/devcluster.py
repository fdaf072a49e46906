"""Private PostgreSQL clusters for the tests and the demo.

A cluster lives in its own folder, listens only on a unix socket in that
folder and trusts local connections. When run as root, the server runs as
the ``postgres`` OS user, because PostgreSQL refuses to run as root.
"""

import glob
import logging
import os
import pwd
import shutil
import subprocess

log = logging.getLogger(__name__)

def _find_pg_bin():
    """Return the newest Debian PostgreSQL server folder that has initdb."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    found.sort(key=lambda path: int(path.split("/")[4]) if path.split("/")[4].isdigit()
               else 0)
    if found:
        return os.path.dirname(found[-1])
    return "/usr/lib/postgresql/15/bin"


PG_BIN = os.environ.get("CUBEMUX_PG_BIN") or _find_pg_bin()
SERVER_USER = "postgres"

_SETTINGS = """
listen_addresses = ''
unix_socket_directories = '{socket_dir}'
port = {port}
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
max_locks_per_transaction = 256
log_min_messages = warning
logging_collector = off
timezone = 'UTC'
"""


def _server_user():
    """Return (uid, gid, name) of the OS user that runs the server."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
    else:
        entry = pwd.getpwnam(SERVER_USER)
    return entry.pw_uid, entry.pw_gid, entry.pw_name


class Cluster:
    """One private PostgreSQL cluster in DIRECTORY, reached through a unix socket."""

    def __init__(self, directory, port=5432, settings=""):
        self.directory = os.path.abspath(directory)
        self.data_dir = os.path.join(self.directory, "data")
        self.socket_dir = self.directory
        self.port = port
        self.extra_settings = settings
        self.uid, self.gid, self.user = _server_user()

    def _run(self, *argv, check=True):
        command = [os.path.join(PG_BIN, argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(
                "%s failed with exit code %d: %s"
                % (argv[0], result.returncode, result.stderr.strip())
            )
        return result

    def init(self):
        """Create the folder and the cluster in it."""
        os.makedirs(self.directory, exist_ok=True)
        os.chown(self.directory, self.uid, self.gid)
        os.chmod(self.directory, 0o755)
        self._run("initdb", "-D", self.data_dir, "-A", "trust", "-U", self.user,
                  "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        settings = _SETTINGS.format(socket_dir=self.socket_dir, port=self.port)
        with open(os.path.join(self.data_dir, "postgresql.conf"), "a") as conf:
            conf.write(settings + self.extra_settings + "\n")

    def start(self):
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", self.data_dir, "-w", "-t", "60",
                  "-l", os.path.join(self.directory, "server.log"), "start")

    def stop(self, mode="fast"):
        """Stop the server if it runs."""
        if os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
            self._run("pg_ctl", "-D", self.data_dir, "-m", mode, "-w", "stop",
                      check=False)

    def restart(self):
        self.stop()
        self.start()

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)

    def dsn(self, dbname="postgres"):
        return "host=%s port=%d user=%s dbname=%s" % (
            self.socket_dir, self.port, self.user, dbname)

    def psql(self, dbname, sql):
        """Run SQL through psql and return its output."""
        return self._run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At",
                         "-h", self.socket_dir, "-p", str(self.port),
                         "-U", self.user, "-d", dbname, "-c", sql).stdout

    def createdb(self, dbname):
        self._run("createdb", "-h", self.socket_dir, "-p", str(self.port),
                  "-U", self.user, dbname)
