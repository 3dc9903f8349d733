"""The bot's Prometheus metrics (SPEC 9): `pinrepl bot --metrics-port PORT` serves them at
`/metrics`.

`Metrics` is a subscriber of the bot's events (`events.Events`), on a registry of its own
(never prometheus_client's global one: two bots in one process, or a test, do not mix):

- `pinrepl_runs_ended_total{job,status}`: the runs this bot ended (ran, skipped, failed
  before they started), and those of dead bots it marked `abandoned`;
- `pinrepl_run_duration_seconds{job}`: how long its runs ran (histogram);
- `pinrepl_run_lateness_seconds{job}`: from when a run was due (its slot, or when a
  deferred run was due; a retry's own `not_before`) to when it started (histogram);
- `pinrepl_runs_running{job}`: the runs running on this bot;
- `pinrepl_runs_queued{job}`: the queued runs in the database (every bot's), read when
  scraped, at most once every `QUEUED_EVERY` seconds however many scrape;
- `pinrepl_database_outages_total` and `pinrepl_database_outage_seconds_total` (the
  outage under way included);
- `pinrepl_heartbeat_age_seconds`: since this bot's last heartbeat was written.

`serving(...)` serves them over HTTP (prometheus_client's own server, on a thread of its
own) while the bot runs. The events arrive on the bot's event loop, the scrapes on the
server's thread: prometheus_client's metrics take a lock, and the queued runs are read on
the bot's loop (`run_coroutine_threadsafe`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..db.models import utcnow
from ..errors import MetricsUnavailable
from ..runs.status import Status
from .events import (
    Beat,
    DatabaseAway,
    Event,
    Events,
    RunEnded,
    RunsAbandoned,
    RunStarted,
)

#: The queued runs are read at most this often (seconds), and waited for at most
#: `QUEUED_WAIT` seconds (a busy or away database: the last count is shown).
QUEUED_EVERY, QUEUED_WAIT = 2.0, 2.0
#: Seconds: from quick runs to hourly jobs.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)
#: Seconds: a bot with room starts a due run within a second; more is a queue.
LATENESS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

Queued = Callable[[], Awaitable[Mapping[str, int]]]

log = logging.getLogger("pinrepl.bot")


class Metrics:
    """The metrics of one bot, fed by its events (`metrics(event)`); `registry` is what to
    serve. `queued()` counts the queued runs by job, on `loop` (the bot's; default: the
    running one); `clock` is the bot's time (UTC)."""

    def __init__(self, queued: Queued | None = None, *,
                 loop: asyncio.AbstractEventLoop | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self._ended = Counter("pinrepl_runs_ended", "Runs this bot ended, by job and status",
                              ["job", "status"], registry=self.registry)
        self._duration = Histogram("pinrepl_run_duration_seconds",
                                   "How long this bot's runs ran", ["job"],
                                   buckets=DURATION_BUCKETS, registry=self.registry)
        self._lateness = Histogram("pinrepl_run_lateness_seconds",
                                   "From when a run was due to when it started", ["job"],
                                   buckets=LATENESS_BUCKETS, registry=self.registry)
        self._running = Gauge("pinrepl_runs_running", "Runs running on this bot", ["job"],
                              registry=self.registry)
        self._outages = Counter("pinrepl_database_outages", "Times the database went away",
                                registry=self.registry)
        self._started: set[int] = set()
        self._away_since: datetime | None = None
        self._away_seconds = 0.0
        self._beat_at: datetime | None = None
        self._queued = _QueuedRuns(queued, loop)
        self.registry.register(_Live(self))

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted | RunEnded):
            self._queued.known.add(event.run.job)
        if isinstance(event, RunStarted):
            self._run_started(event)
        elif isinstance(event, RunEnded):
            self._ended.labels(event.run.job, event.status).inc()
            if event.seconds is not None:
                self._duration.labels(event.run.job).observe(event.seconds)
            if event.run.id in self._started:
                self._started.discard(event.run.id)
                self._running.labels(event.run.job).dec()
        elif isinstance(event, RunsAbandoned):
            for run in event.runs:
                self._ended.labels(run.job, str(Status.ABANDONED)).inc()
        elif isinstance(event, Beat):
            self._beat_at = event.at
        elif isinstance(event, DatabaseAway):
            self._database(event.away)

    def _run_started(self, event: RunStarted) -> None:
        run = event.run
        self._started.add(run.id)
        self._running.labels(run.job).inc()
        started = event.started_at or run.started_at
        due = run.not_before if run.attempt > 1 else run.scheduled_for
        if started is not None:
            self._lateness.labels(run.job).observe(max(0.0, (started - due).total_seconds()))

    def _database(self, away: bool) -> None:
        now = self._clock()
        if away and self._away_since is None:
            self._outages.inc()
            self._away_since = now
        elif not away and self._away_since is not None:
            self._away_seconds += (now - self._away_since).total_seconds()
            self._away_since = None

    def outage_seconds(self) -> float:
        """The seconds the database was away, the outage under way included."""
        since = self._away_since
        ongoing = (self._clock() - since).total_seconds() if since is not None else 0.0
        return self._away_seconds + ongoing

    def heartbeat_age(self) -> float | None:
        """Seconds since the last heartbeat (None: none yet)."""
        beat_at = self._beat_at
        return (self._clock() - beat_at).total_seconds() if beat_at is not None else None

    def queued(self) -> dict[str, int] | None:
        """The queued runs by job, as last read (read again when older than
        `QUEUED_EVERY`); None when never read."""
        return self._queued.read()


class _QueuedRuns:
    """The queued runs by job, read on the bot's loop from the scraping thread, at most
    every `QUEUED_EVERY` seconds; a job once seen (`known`, or in a count) stays, at 0."""

    def __init__(self, count: Queued | None, loop: asyncio.AbstractEventLoop | None) -> None:
        self._count = count
        if loop is None:
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
        self._loop = loop
        self._lock = threading.Lock()
        self._counts: dict[str, int] | None = None
        self._read_at = -QUEUED_EVERY
        self.known: set[str] = set()

    def read(self) -> dict[str, int] | None:
        with self._lock:  # scrapes at once: one reads, the others get its count
            if time.monotonic() - self._read_at >= QUEUED_EVERY and self._can_read():
                self._read_at = time.monotonic()
                self._read()
            return None if self._counts is None else dict(self._counts)

    def _can_read(self) -> bool:
        loop = self._loop
        if loop is None or self._count is None or loop.is_closed():
            return False
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                return False  # on the loop itself: it cannot wait for its own work
        return True

    def _read(self) -> None:
        loop, count = self._loop, self._count
        assert loop is not None and count is not None
        future = asyncio.run_coroutine_threadsafe(_counted(count), loop)
        try:
            found = future.result(QUEUED_WAIT)
        except Exception:  # the database is away or busy: the last count stays
            future.cancel()
            return
        self.known.update(found)
        counts = dict.fromkeys(self.known, 0)
        counts.update(found)
        self._counts = counts


async def _counted(count: Queued) -> dict[str, int]:
    return dict(await count())


class _Live(Collector):
    """The metrics read when scraped: queued runs, outage seconds, heartbeat age."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        queued = self._metrics.queued()
        if queued is not None:
            family = GaugeMetricFamily("pinrepl_runs_queued",
                                       "Queued runs in the database, by job", labels=["job"])
            for job, count in sorted(queued.items()):
                family.add_metric([job], count)
            yield family
        yield CounterMetricFamily("pinrepl_database_outage_seconds",
                                  "Seconds the database was away",
                                  value=self._metrics.outage_seconds())
        age = self._metrics.heartbeat_age()
        if age is not None:
            yield GaugeMetricFamily("pinrepl_heartbeat_age_seconds",
                                    "Seconds since this bot's last heartbeat", value=age)


@contextlib.contextmanager
def serving(events: Events, queued: Queued, host: str, port: int) -> Iterator[Metrics]:
    """Serve the metrics of the bot whose `events` these are at
    `http://host:port/metrics` (port 0: any free one, logged) until the block ends;
    `MetricsUnavailable` when it cannot listen there."""
    metrics = Metrics(queued)
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except (OSError, OverflowError) as exc:  # in use, not ours to use, no such address
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MetricsUnavailable(
            f"cannot serve metrics on {host}:{port}: {why} (choose another --metrics-port "
            "or --metrics-host)") from None
    events.subscribe(metrics)
    bound, served = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{bound}]" if ":" in bound else bound
    log.info("metrics at http://%s:%d/metrics", shown, served,
             extra={"event": "metrics_served", "port": served})
    try:
        yield metrics
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5.0)
