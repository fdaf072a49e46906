"""The consumer loop of one job: next batch, apply its events, finish it."""

import contextlib
import datetime
import logging
import sys
import threading
import time

import psycopg2

from cubemux import deadletter, pgq, retention, tracking
from cubemux.apply import BatchWriter
from cubemux.db import Connection, mask_dsn, mask_text
from cubemux.errors import ConfigError, EventError, PartitionError
from cubemux.events import decode_event, decode_event_line
from cubemux.partitions import Partitioner
from cubemux.routing import Router, partition_zone

log = logging.getLogger(__name__)

# Report liveness at least this often while a batch streams in.
BEAT_EVERY_EVENTS = 5000

TRUNCATE_TYPE = "R"

# Read the queue's lag figures from PgQ at most this often, in seconds.
QUEUE_FIGURES_INTERVAL = 5.0

# Maximum time, in seconds, that a thread may hold the GIL while another waits
# for it. A batch's fetch and COPY threads need the GIL briefly after each
# network wait. With Python's default of 5 ms, they would often wait behind
# the decoding thread.
SWITCH_INTERVAL = 0.0005


class Reporter:
    """Receives a worker's liveness and progress. This one discards them."""

    def beat(self, batch_id=None):
        pass

    def started(self):
        pass

    def queue_figures(self, figures):
        pass

    def standby(self, waiting):
        pass

    def retention(self, action, count):
        pass

    def batch_done(self, batch, counts, seconds):
        pass

    def failed(self, reason):
        pass


class Worker:
    """Runs one job until asked to stop. Errors propagate to the caller."""

    def __init__(self, job, reporter=None):
        self.job = job
        self.reporter = reporter or Reporter()
        self.stopping = threading.Event()
        self.src = Connection(job.src_db, "source", job.connection_lifetime,
                              setup=self._setup_source)
        self.dst = Connection(job.dst_db, "destination", job.connection_lifetime)
        self.ddl = Connection(job.dst_db, "destination", job.connection_lifetime)
        self.partitioner = Partitioner(
            self.ddl, job.part_template, job.job_name,
            pre_part=job.pre_part,
            post_part=job.post_part, main=self.dst)
        self.timezone = None
        self.figures_read_at = None
        self.lock_holder = None
        self._waiting = False
        self.router = None
        self.on_truncate = job.on_truncate
        self.retention_due = None
        self.retention_handled = 0

    def request_stop(self):
        self.stopping.set()

    def run(self):
        """Consume batches until stop is requested."""
        self.start()
        while not self.stopping.is_set():
            self.reporter.beat()
            self.report_queue_figures()
            self.enforce_retention()
            if not self.run_once():
                self.stopping.wait(self.job.loop_delay)
        log.info("stopped consumer %s on queue %s",
                 self.job.pgq_consumer_id, self.job.pgq_queue_name)

    def start(self):
        """Connect, register the consumer and check the tracking schema."""
        job = self.job
        # The worker's process is its own, so the setting affects no other job.
        sys.setswitchinterval(SWITCH_INTERVAL)
        src = self.src.get()
        dst = self.dst.get()
        if not tracking.schema_installed(dst):
            tracking.install_schema(dst)
            log.info("installed the pgq_ext tracking schema in %s", mask_dsn(job.dst_db))
        if job.on_error == "deadletter":
            deadletter.install(dst)

        if pgq.register(src, job.pgq_queue_name, job.pgq_consumer_id):
            # A new registration starts at the queue's latest tick, so an old
            # destination position no longer means anything.
            tracking.set_last_tick(dst, job.pgq_consumer_id, None)
            dst.commit()
            log.info("registered consumer %s on queue %s",
                     job.pgq_consumer_id, job.pgq_queue_name)
        zone = partition_zone(job, self.timezone)
        self.router = Router(job, zone, self.partitioner)
        self.reporter.started()
        log.info("started: queue %s, consumer %s, mode %s, dateformat %r, "
                 "partition time zone %s", job.pgq_queue_name,
                 job.pgq_consumer_id, job.mode, job.dateformat, self.timezone)

    def report_queue_figures(self):
        """Send PgQ's lag figures to the reporter, at most every few seconds."""
        now = time.monotonic()
        if (self.figures_read_at is not None
                and now - self.figures_read_at < QUEUE_FIGURES_INTERVAL):
            return
        self.figures_read_at = now
        figures = pgq.queue_figures(self.src.get(), self.job.pgq_queue_name,
                                    self.job.pgq_consumer_id)
        self.reporter.queue_figures(figures)

    def _setup_source(self, conn):
        with conn.cursor() as cur:
            if self.job.timezone:
                try:
                    cur.execute("set time zone %s", (self.job.timezone,))
                except psycopg2.DataError as error:
                    conn.rollback()
                    raise ConfigError(
                        "%s: [cube_dispatcher] timezone = %r is invalid: %s; use a "
                        "zone name such as 'UTC' or 'Europe/Tallinn'"
                        % (self.job.path, self.job.timezone,
                           (error.pgerror or "").strip())) from None
        self.timezone = pgq.server_timezone(conn)
        conn.commit()

    def close(self):
        for connection in (self.src, self.dst, self.ddl):
            connection.close()

    def run_once(self):
        """Process one batch. Return False when the queue had none."""
        for connection in (self.src, self.dst, self.ddl):
            connection.refresh()
        job = self.job
        src = self.src.get()
        dst = self.dst.get()
        if not self._hold_queue_lock(src):
            return False

        batch = pgq.next_batch(src, job.pgq_queue_name, job.pgq_consumer_id,
                               job.dateformat)
        if batch is None:
            return False
        started = time.monotonic()
        self.reporter.beat(batch_id=batch.batch_id)
        try:
            counts = self._process(src, dst, batch)
        except BaseException:
            _rollback(dst)
            _rollback(src)
            raise

        # Reported once the destination has committed, so a crash before
        # finish_batch cannot lose the count of applied rows.
        self.reporter.batch_done(batch, counts, time.monotonic() - started)
        pgq.finish_batch(src, batch.batch_id)
        return True

    def _hold_queue_lock(self, src):
        """Take the queue's advisory lock on the source connection, if free.

        Only the holder applies batches. Another worker of the same queue and
        consumer, for example a master on a second host, waits as a standby
        and takes over when the holder's connection ends.
        """
        if self.lock_holder is src:
            return True
        acquired = pgq.try_queue_lock(src, self.job.pgq_queue_name,
                                      self.job.pgq_consumer_id)
        if acquired:
            if self.lock_holder is not None or self._waiting:
                log.info("took over queue %s: no other worker has its lock now",
                         self.job.pgq_queue_name)
            self.lock_holder = src
            self._set_waiting(False)
        else:
            if not self._waiting:
                log.info("standby: another worker applies queue %s for consumer %s;"
                         " waiting until it stops", self.job.pgq_queue_name,
                         self.job.pgq_consumer_id)
            self._set_waiting(True)
        return acquired

    def _set_waiting(self, waiting):
        if waiting != self._waiting:
            self._waiting = waiting
            self.reporter.standby(waiting)

    def _process(self, src, dst, batch):
        job = self.job
        # Serializes appliers of one consumer on the destination, so that a
        # second applier reads the first one's tick and skips the batch.
        with dst.cursor() as cur:
            cur.execute("select pg_advisory_xact_lock(hashtext(%s))",
                        ("cubemux.consumer:%s" % job.pgq_consumer_id,))
        dst_tick = tracking.get_last_tick(dst, job.pgq_consumer_id)
        action = tracking.decide(dst_tick, batch, job)
        if action == tracking.SKIP:
            dst.rollback()
            log.info("skipped batch %d: the destination already has tick %d",
                     batch.batch_id, batch.tick_id)
            return None

        writer = BatchWriter(dst, job.mode, self.partitioner,
                             on_new_column=job.on_new_column, on_error=job.on_error,
                             background=True)
        try:
            return self._apply(src, dst, batch, writer)
        finally:
            # Ends the COPY thread before anything else uses DST.
            writer.close()

    def _apply(self, src, dst, batch, writer):
        job = self.job
        router = self.router
        router.start_batch(batch)
        seen = 0
        # A truncate must land between the events around it, so it needs the
        # batch in ev_id order. Otherwise the server may skip sorting it.
        ordered = self.on_truncate == "truncate"
        # Closed before any rollback, so the fetch thread is done with SRC.
        with contextlib.closing(pgq.iter_events(
                src, batch.batch_id, ordered=ordered,
                with_time=router.uses_event_time)) as events:
            for ev_id, ev_time, ev_type, ev_data, extra1, extra2 in events:
                seen += 1
                if seen % BEAT_EVERY_EVENTS == 0:
                    self.reporter.beat(batch_id=batch.batch_id)
                try:
                    if ev_type == TRUNCATE_TYPE and self.on_truncate != "error":
                        self._truncate(writer, router, ev_id, ev_time, extra1)
                        continue
                    event = decode_event_line(ev_id, ev_type, ev_data, extra1, extra2)
                    name = router.route(event, ev_time)
                    if name is not None:
                        writer.add(event, name)
                except (EventError, PartitionError) as error:
                    if job.on_error != "deadletter":
                        raise
                    writer.set_aside(ev_id, describe_error(error, job))
        counts = writer.finish()
        if writer.dead:
            dead_events = deadletter.fetch_events(src, batch.batch_id, writer.dead)
            deadletter.store(dst, job, batch, dead_events, writer.dead)

        tracking.set_last_tick(dst, job.pgq_consumer_id, batch.tick_id)
        dst.commit()
        events = sum(counts.events.values())
        log.info("applied batch %d (ticks %d..%d): %d events, %d rows inserted, "
                 "%d deleted, %d events skipped, %d set aside", batch.batch_id,
                 batch.prev_tick_id, batch.tick_id, events,
                 sum(counts.inserted.values()), sum(counts.deleted.values()),
                 router.skipped, len(writer.dead))
        counts.events_skipped = router.skipped
        if counts.partitions_created:
            self.retention_due = 0.0
        return counts

    def _truncate(self, writer, router, ev_id, ev_time, extra1):
        """Apply a truncate event as on_truncate sets: ignore it, or empty the partition."""
        if self.on_truncate == "ignore":
            router.skipped += 1
            log.info("ignored truncate event %d of table %s (on_truncate = ignore)",
                     ev_id, extra1)
            return
        event = decode_event(ev_id, "I:", "", extra1)
        name = router.route(event, ev_time)
        if name is not None:
            writer.truncate(event, name)
            log.info("truncated %s.%s for truncate event %d of table %s",
                     event.schema, name, ev_id, extra1)

    def enforce_retention(self):
        """Drop or detach expired partitions of the parents this worker has written."""
        period = self.job.retention_period
        if not period or self.router is None or not self.job.dateformat:
            return 0
        now = time.monotonic()
        if self.retention_due is not None and now < self.retention_due:
            return 0
        self.retention_due = now + retention.CHECK_INTERVAL
        naming = self.router.naming
        limit = retention.cutoff(datetime.datetime.now(datetime.timezone.utc), period,
                                 naming.zone)
        action = self.job.retention_action
        handled = 0
        for schema, parent in sorted(self.router.parents):
            handled += retention.enforce(self.ddl.get(), schema, parent, naming.format,
                                         naming.unit, limit, action, self.job.job_name)
        self.retention_handled += handled
        if handled:
            self.reporter.retention(action, handled)
        return handled


def _rollback(connection):
    try:
        if connection is not None and not connection.closed:
            connection.rollback()
    except psycopg2.Error as error:
        log.debug("rollback failed: %s", error)


def describe_error(error, job):
    """Return the text of ERROR with the job's passwords masked."""
    return mask_text(str(error).strip(), (job.src_db, job.dst_db))
