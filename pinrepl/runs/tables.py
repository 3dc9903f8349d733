"""pinrepl's own tables: `background_job_runs` (one row per run, SPEC 7 and 8),
`background_job_bots` (the bots that are up, and their heartbeats) and
`background_job_pauses` (the pauses in force, SPEC 9).

They are models of the app's metadata like `tenants` (so `database.background_job_runs`
reads them in the REPL), but versioned by pinrepl's own migrations (`migrate`), not
created by `create_all`: their tables carry `info={"pinrepl": "versioned"}`.

The indexes are the queue's:
- `..._slot_once`: a scheduled (job, arguments, tenant, slot, try) is inserted once,
  whichever bot tries first; over the arguments' hash, so arguments of any size fit a
  btree, and `coalesce` makes runs without a tenant collide too (NULLs never do).
- `..._key_live`: one queued or running run per `key`.
- `..._queue`: the queued rows in claim order, and only those: the claim costs the same
  however long the history is.
- `..._parent`: a fan-out's tenant runs; `..._retries`: the later tries of a run.
- The listing's (SPEC 9), newest first by id, one page after another (keyset): `..._job_id`,
  `..._status` (status, id), `..._tenant_id`, `..._origin_id`, `..._created` (`--since`).
- `..._cancel`: the running runs whose cancel was asked, and only those: a bot looks for its
  own among them without reading the history.

No foreign key to `tenants`: the history outlives a deleted tenant.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..db.models import Model, Tenant, UtcDateTime, utcnow
from .record import args_hash

#: The `info` that marks a table versioned by pinrepl's migrations.
VERSIONED = {"pinrepl": "versioned"}

_QUEUED = text("status = 'queued'")
_LIVE = text("key IS NOT NULL AND status IN ('queued', 'running')")
_SCHEDULED = text("origin = 'schedule'")
_CHILD = text("parent_id IS NOT NULL")
_RETRY = text("retry_of IS NOT NULL")
_TENANT = text("tenant_id IS NOT NULL")
_CANCEL_ASKED = text("cancel_requested_at IS NOT NULL AND status = 'running'")


def _where(clause: Any) -> dict[str, Any]:
    return {"postgresql_where": clause, "sqlite_where": clause}


def _hash_of_args(context: Any) -> str:
    """`args_hash` for a row inserted without one (by hand, or by an older writer)."""
    return args_hash(context.get_current_parameters()["args"])


def _slot(context: Any) -> Any:
    """`not_before` for a row inserted without one: its slot."""
    return context.get_current_parameters()["scheduled_for"]


class BackgroundJobRun(Model):
    """A run: before it starts (`queued`), while it runs, and after it ended."""

    __tablename__ = "background_job_runs"
    __table_args__ = (
        Index("background_job_runs_job_slot", "job", "scheduled_for"),
        Index("background_job_runs_status", "status", "id"),
        Index("background_job_runs_slot", "scheduled_for"),
        Index("background_job_runs_started", "started_at"),
        Index("background_job_runs_queue", "priority", "not_before", "id", **_where(_QUEUED)),
        Index("background_job_runs_key_live", "key", unique=True, **_where(_LIVE)),
        Index("background_job_runs_parent", "parent_id", **_where(_CHILD)),
        Index("background_job_runs_retries", "retry_of", **_where(_RETRY)),
        Index("background_job_runs_job_id", "job", "id"),
        Index("background_job_runs_tenant_id", "tenant_id", "id", **_where(_TENANT)),
        Index("background_job_runs_origin_id", "origin", "id"),
        Index("background_job_runs_created", "created_at"),
        Index("background_job_runs_cancel", "bot", **_where(_CANCEL_ASKED)),
        {"info": VERSIONED},
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True)
    job: Mapped[str] = mapped_column(String(300))
    tenant_id: Mapped[int | None] = mapped_column(BigInteger)
    #: The run's arguments: JSON of {"args": [...], "kwargs": {...}}, keys sorted.
    args: Mapped[str] = mapped_column(Text)
    #: SHA-256 (hex) of `args`, for the unique index.
    args_hash: Mapped[str] = mapped_column(String(64), default=_hash_of_args)
    #: The slot of a scheduled run; when a deferred run was due.
    scheduled_for: Mapped[datetime] = mapped_column(UtcDateTime)
    #: See `status.Status`.
    status: Mapped[str] = mapped_column(String(20))
    #: The bot that claimed it (None: queued, or run in the calling process).
    bot: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: The exception's type and message, for a run that did not succeed.
    error: Mapped[str | None] = mapped_column(Text)
    #: schedule, defer, cli, repl or app (`record.Origin`).
    origin: Mapped[str] = mapped_column(String(20), default="schedule")
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    parent_id: Mapped[int | None] = mapped_column(BigInteger)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    key: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    timeout: Mapped[float | None] = mapped_column(Float)
    #: When this try may start.
    not_before: Mapped[datetime] = mapped_column(UtcDateTime, default=_slot)
    traceback: Mapped[str | None] = mapped_column(Text)
    #: A retry's first try (None: this is a first try).
    retry_of: Mapped[int | None] = mapped_column(BigInteger)
    #: When a cancel of this running run was asked (`cancel-runs`): its bot cancels it.
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


Index(
    "background_job_runs_slot_once",
    BackgroundJobRun.job, BackgroundJobRun.args_hash,
    func.coalesce(BackgroundJobRun.tenant_id, 0), BackgroundJobRun.scheduled_for,
    BackgroundJobRun.attempt,
    unique=True, **_where(_SCHEDULED),
)


class BackgroundJobBot(Model):
    """A bot that is up, and its heartbeat. A bot is dead once `expires_at` (its last beat
    plus its own lease) has passed: its running runs are abandoned."""

    __tablename__ = "background_job_bots"
    __table_args__ = {"info": VERSIONED}

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    beat_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: When it is dead unless it beats again (None: a bot of 0.3.0, judged by its peers'
    #: lease).
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class BackgroundJobPause(Model):
    """A pause in force: of a job (`tenant_id` None), or of one tenant's runs of it. A
    paused job's slots are recorded `skipped`; its other queued runs wait (SPEC 9)."""

    __tablename__ = "background_job_pauses"
    __table_args__ = {"info": VERSIONED}

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                    primary_key=True)
    job: Mapped[str] = mapped_column(String(300))
    tenant_id: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column(UtcDateTime)


Index(
    "background_job_pauses_once",
    BackgroundJobPause.job, func.coalesce(BackgroundJobPause.tenant_id, 0), unique=True,
)

#: pinrepl's own tables, in the order they are made.
TABLES: tuple[type[Model], ...] = (BackgroundJobRun, BackgroundJobBot, BackgroundJobPause)
RUNS = Model.metadata.tables[BackgroundJobRun.__tablename__]
BOTS = Model.metadata.tables[BackgroundJobBot.__tablename__]
PAUSES = Model.metadata.tables[BackgroundJobPause.__tablename__]

#: The tables every app has, whatever its models file says.
BUILT_IN: tuple[type[Model], ...] = (Tenant, *TABLES)
