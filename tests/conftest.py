"""Fixtures: private PostgreSQL clusters with pgq, and per-test databases."""

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psycopg2
import pytest

from cubemux.config import load_job
from cubemux.devcluster import Cluster
from cubemux.worker import Worker

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def cluster_root():
    root = tempfile.mkdtemp(prefix="cubemux-tests-")
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _start_cluster(root, name, port):
    cluster = Cluster(os.path.join(root, name), port=port)
    cluster.init()
    cluster.start()
    return cluster


@pytest.fixture(scope="session")
def src_cluster(cluster_root):
    cluster = _start_cluster(cluster_root, "src", 5601)
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def dst_cluster(cluster_root):
    cluster = _start_cluster(cluster_root, "dst", 5602)
    yield cluster
    cluster.destroy()


def connect(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    return conn


class Setup:
    """A source database with pgq and a queue, and a destination database."""

    def __init__(self, src_cluster, dst_cluster, tmp_path, queue="testq"):
        number = next(_counter)
        self.src_cluster = src_cluster
        self.dst_cluster = dst_cluster
        self.src_name = "src%d" % number
        self.dst_name = "dst%d" % number
        self.tmp_path = tmp_path
        self.queue = queue
        src_cluster.createdb(self.src_name)
        dst_cluster.createdb(self.dst_name)
        self.src_dsn = src_cluster.dsn(self.src_name)
        self.dst_dsn = dst_cluster.dsn(self.dst_name)
        self.src = connect(self.src_dsn)
        self.dst = connect(self.dst_dsn)
        self.src_exec("create extension pgq")
        self.src_exec("select pgq.create_queue(%s)", (queue,))

    def close(self):
        self.src.close()
        self.dst.close()

    def src_exec(self, statement, params=None):
        with self.src.cursor() as cur:
            cur.execute(statement, params)

    def dst_exec(self, statement, params=None):
        with self.dst.cursor() as cur:
            cur.execute(statement, params)

    def dst_query(self, statement, params=None):
        with self.dst.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()

    def src_query(self, statement, params=None):
        with self.src.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()

    def table(self, ddl, name, dst_ddl=None):
        """Create a table on both sides and a logutriga trigger on the source."""
        self.src_exec(ddl)
        self.dst_exec(dst_ddl or ddl)
        self.src_exec(
            "create trigger cubemux_test after insert or update or delete on %s "
            "for each row execute procedure pgq.logutriga(%%s)" % name, (self.queue,))

    def tick(self):
        """Close a tick on the queue, so the events so far form a batch."""
        (before,) = self.src_query("select pgq.force_tick(%s)", (self.queue,))[0]
        for _ in range(100):
            self.src_exec("select pgq.ticker()")
            (after,) = self.src_query(
                "select last_tick_id from pgq.get_queue_info(%s)", (self.queue,))[0]
            if after != before:
                return after
            self.src_exec("select pg_sleep(0.01)")
        raise AssertionError("the queue did not tick")

    def job_file(self, name="job", **settings):
        values = {
            "job_name": name,
            "src_db": self.src_dsn,
            "dst_db": self.dst_dsn,
            "pgq_queue_name": self.queue,
            "loop_delay": "0.1",
        }
        values.update(settings)
        lines = ["[cube_dispatcher]"]
        for key, value in values.items():
            if value is None:
                continue
            if "\n" in str(value):
                # ConfigParser-style continuation lines, as skytools job files have.
                lines.append("%s =" % key)
                lines.extend("    " + line for line in str(value).splitlines())
            else:
                lines.append("%s = %s" % (key, value))
        path = self.tmp_path / ("%s.ini" % name)
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    def worker(self, name="job", **settings):
        return Worker(load_job(self.job_file(name, **settings)))


def run_job_with_one_row(setup, path):
    """Run `cubemux run -v PATH` while one row goes into public.item. Return its stderr.

    The job runs for about 4 s and stops on SIGTERM.
    """
    process = subprocess.Popen([sys.executable, "-m", "cubemux", "run", "-v", path],
                               stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    setup.src_exec("insert into item values (1)")
    setup.tick()
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=30)[1]


def record_counts(worker):
    """Return a list that receives the Counts of each batch that WORKER applies."""
    counted = []
    worker.reporter.batch_done = lambda batch, counts, seconds: counted.append(counts)
    return counted


def drain(worker, limit=100):
    """Process batches until the queue has none. Return how many were processed."""
    count = 0
    while worker.run_once():
        count += 1
        assert count < limit, "the queue did not run empty"
    return count


@pytest.fixture
def setup(src_cluster, dst_cluster, tmp_path):
    env = Setup(src_cluster, dst_cluster, tmp_path)
    yield env
    env.close()


@pytest.fixture
def same_cluster_setup(src_cluster, tmp_path):
    env = Setup(src_cluster, src_cluster, tmp_path)
    yield env
    env.close()
