"""pinrepl's own tables, versioned and upgraded in place by `init-database` (SPEC 8): a new
database gets them at the current revision; a database of pinrepl 0.1.0 is upgraded keeping
every row; the app's own tables and its own Alembic setup are never touched; tables of
another version are one line naming init-database."""

from __future__ import annotations

import asyncio
import json
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite

from pinrepl.db import Engine
from pinrepl.errors import MissingTable, TablesOutdated
from pinrepl.runs import migrate
from pinrepl.runs.record import args_hash
from pinrepl.runs.tables import BOTS, BUILT_IN, PAUSES, RUNS

from ..conftest import invoke, write_app

# -- pinrepl 0.1.0's tables, as its db/models.py made them (commit ff990e7) -----------------

OLD = MetaData()
OLD_RUNS = Table(
    "background_job_runs", OLD,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("job", String(300), nullable=False),
    Column("tenant_id", BigInteger),
    Column("args", Text, nullable=False),
    Column("scheduled_for", DateTime(timezone=True), nullable=False),
    Column("status", String(20), nullable=False),
    Column("bot", String(200), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("error", Text),
    Index("background_job_runs_job_slot", "job", "scheduled_for"),
    Index("background_job_runs_status", "status"),
    Index("background_job_runs_slot", "scheduled_for"),
    Index("background_job_runs_started", "started_at"),
)
Index("background_job_runs_claim", OLD_RUNS.c.job, OLD_RUNS.c.args,
      func.coalesce(OLD_RUNS.c.tenant_id, 0), OLD_RUNS.c.scheduled_for, unique=True)
OLD_BOTS = Table(
    "background_job_bots", OLD,
    Column("id", String(200), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("beat_at", DateTime(timezone=True), nullable=False),
)

SLOT = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def _args(*args: object, **kwargs: object) -> str:
    return json.dumps({"args": list(args), "kwargs": kwargs}, sort_keys=True,
                      ensure_ascii=False)


def _run(job: str, args: str, slot: datetime, status: str, tenant: int | None = None,
         error: str | None = None) -> dict[str, object]:
    return {"job": job, "tenant_id": tenant, "args": args, "scheduled_for": slot,
            "status": status, "bot": "web-1:4242", "started_at": slot + timedelta(seconds=1),
            "finished_at": None if status == "running" else slot + timedelta(seconds=3),
            "error": error}


#: A history of pinrepl 0.1.0: with and without tenants, non-ASCII arguments, every status.
HISTORY = [
    _run("reports/daily", _args(), SLOT, "succeeded"),
    _run("mail/digest", _args("café ☕", to="zoë@exämple.org"), SLOT, "failed", tenant=1,
         error="ValueError: boom ✗"),
    _run("mail/digest", _args("café ☕", to="zoë@exämple.org"), SLOT, "succeeded", tenant=2),
    _run("reports/daily", _args(), SLOT + timedelta(days=1), "running"),
    _run("sync", _args(3, full=True), SLOT, "skipped", tenant=2),
    _run("sync", _args(3, full=True), SLOT, "abandoned"),
]
BOT = {"id": "web-1:4242", "host": "web-1", "pid": 4242, "started_at": SLOT, "beat_at": SLOT}


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> tuple[Path, dict[str, str]]:
    """(app folder, environment): an app with no tables of its own, on SQLite and
    PostgreSQL."""
    return write_app(tmp_path / "app", {}), {"PINREPL_DATABASE_URL": database_url}


def engine_of(app: tuple[Path, dict[str, str]]) -> Engine:
    root, env = app
    return Engine(env["PINREPL_DATABASE_URL"], root, BUILT_IN)


async def init_database(app: tuple[Path, dict[str, str]]) -> list[str]:
    """`pinrepl init-database`'s lines, after checking it succeeded (in a thread: the CLI
    runs an event loop of its own)."""
    root, env = app
    result = await asyncio.to_thread(invoke, "init-database", "--app", root, env=env)
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    return result.stdout.splitlines()


async def on(engine: Engine, *statements: Any) -> None:
    async with engine.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement) if isinstance(statement, str) else statement)


async def make_0_1_0(engine: Engine, history: list[dict[str, object]] = HISTORY) -> None:
    """The database pinrepl 0.1.0's init-database and bots left: its tables, rows, and no
    version table."""
    await engine.check(create=True)
    async with engine.engine.begin() as conn:
        await conn.run_sync(OLD.create_all)
        await conn.execute(insert(OLD_RUNS), history)
        await conn.execute(insert(OLD_BOTS), [BOT])


async def runs(engine: Engine) -> list[dict[str, object]]:
    async with engine.engine.connect() as conn:
        rows = await conn.execute(select(RUNS).order_by(RUNS.c.id))
        return [dict(row._mapping) for row in rows]


async def rows_of(engine: Engine, name: str) -> list[tuple[object, ...]]:
    async with engine.engine.connect() as conn:
        return [tuple(row) for row in await conn.execute(text(f"SELECT * FROM {name}"))]


def _index_definitions(sync: Any, schema: str | None = None) -> dict[str, str]:
    """The index definitions of pinrepl's tables, as the database holds them."""
    names = (RUNS.name, BOTS.name, PAUSES.name)
    if sync.dialect.name == "sqlite":
        found = sync.execute(text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
            f"AND tbl_name IN {names}"))
        return {name: " ".join(sql.split()) for name, sql in found}
    found = sync.execute(text(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :schema "
        f"AND tablename IN {names}"), {"schema": schema or "public"})
    return {name: sql.replace(f"{schema or 'public'}.", "") for name, sql in found}


def _reference_indexes(sync: Any) -> dict[str, str]:
    """The index definitions `create_all` of `runs.tables` makes: on SQLite as compiled,
    on PostgreSQL as the server shows them (made in a schema of their own)."""
    if sync.dialect.name == "sqlite":
        from sqlalchemy.schema import CreateIndex

        return {index.name: " ".join(str(CreateIndex(index).compile(
                    dialect=sqlite.dialect())).split())
                for table in (RUNS, BOTS, PAUSES) for index in table.indexes
                if index.name is not None}
    reference = MetaData(schema="reference")
    for table in (RUNS, BOTS, PAUSES):
        table.to_metadata(reference)
    sync.execute(text("CREATE SCHEMA reference"))
    reference.create_all(sync)
    try:
        return _index_definitions(sync, "reference")
    finally:
        sync.execute(text("DROP SCHEMA reference CASCADE"))


def _differences(sync: Any) -> list[object]:
    """What Alembic's autogenerate finds between the database and `runs.tables`."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    ours = {RUNS.name, BOTS.name, PAUSES.name}
    context = MigrationContext.configure(sync, opts={
        "compare_type": True, "compare_server_default": True,
        "include_name": lambda name, kind, _parent: kind != "table" or name in ours,
    })
    metadata = MetaData()
    for table in (RUNS, BOTS, PAUSES):
        table.to_metadata(metadata)
    # SQLite's reflection skips the index over an expression, with a warning.
    with pytest.warns() if sync.dialect.name == "sqlite" else nullcontext():
        return compare_metadata(context, metadata)


async def assert_tables_match_the_models(engine: Engine) -> None:
    async with engine.engine.begin() as conn:
        assert await conn.run_sync(_differences) == []
        assert await conn.run_sync(_index_definitions) == await conn.run_sync(
            _reference_indexes)


# -- the tests ------------------------------------------------------------------------------


async def test_a_new_database_gets_the_tables_at_the_current_version(app):
    assert (await init_database(app))[-1] == "pinrepl tables created (version 0004)"
    engine = engine_of(app)
    try:
        await migrate.check_version(engine)
        await assert_tables_match_the_models(engine)
        assert await rows_of(engine, migrate.VERSION_TABLE) == [("0004",)]
    finally:
        await engine.aclose()


async def test_a_database_of_pinrepl_0_1_0_is_upgraded_in_place_keeping_every_row(app):
    engine = engine_of(app)
    try:
        await make_0_1_0(engine)
        assert (await init_database(app))[-1] == "pinrepl tables upgraded from 0001 to 0004"

        upgraded = await runs(engine)
        assert [{k: row[k] for k in HISTORY[0]} for row in upgraded] == HISTORY
        for row in upgraded:
            assert row["args_hash"] == args_hash(row["args"])
            assert (row["origin"], row["attempt"], row["priority"]) == ("schedule", 1, 0)
            assert (row["parent_id"], row["key"], row["timeout"], row["traceback"]) == \
                (None, None, None, None)
            assert row["created_at"] == row["started_at"]
            assert row["not_before"] == row["scheduled_for"]
        assert await rows_of(engine, BOTS.name) != []
        await assert_tables_match_the_models(engine)
        await migrate.check_version(engine)

        assert (await init_database(app))[-1] == "pinrepl tables up to date (version 0004)"
        assert await runs(engine) == upgraded
    finally:
        await engine.aclose()


async def test_the_upgrade_hashes_a_long_history_in_batches(app):
    engine = engine_of(app)
    many = [_run("sync", _args(n, "ünïcode"), SLOT, "succeeded", tenant=n % 3 or None)
            for n in range(2_345)]  # SQLite hashes 1,000 a statement
    try:
        await make_0_1_0(engine, many)
        await init_database(app)
        upgraded = await runs(engine)
        assert len(upgraded) == len(many)
        assert all(row["args_hash"] == args_hash(row["args"])
                   for row in upgraded)
    finally:
        await engine.aclose()


async def test_tables_of_0_1_0_are_one_line_naming_init_database(app):
    engine = engine_of(app)
    try:
        await make_0_1_0(engine)
        with pytest.raises(TablesOutdated) as outdated:
            await migrate.check_version(engine)
        message = str(outdated.value)
        assert "\n" not in message and "pinrepl init-database" in message
        assert message == ("pinrepl's tables have no version (pinrepl 0.1.0 made them); "
                           "upgrade them with: pinrepl init-database")
    finally:
        await engine.aclose()


async def test_tables_at_an_older_or_unknown_version_are_one_line_too(app):
    await init_database(app)
    engine = engine_of(app)
    try:
        for found, says in (("0001", "this pinrepl needs 0004; upgrade them with: pinrepl "
                                     "init-database"),
                            ("0099", "of a newer pinrepl than this one")):
            await on(engine, f"UPDATE {migrate.VERSION_TABLE} SET version_num = '{found}'")
            fresh = engine_of(app)  # the version is checked once per engine
            try:
                with pytest.raises(TablesOutdated, match=says) as outdated:
                    await migrate.check_version(fresh)
                assert "\n" not in str(outdated.value)
                assert "pinrepl init-database" in str(outdated.value)
            finally:
                await fresh.aclose()
    finally:
        await engine.aclose()


async def test_no_tables_at_all_is_missing_table(app):
    engine = engine_of(app)
    try:
        await engine.check(create=True)
        with pytest.raises(MissingTable, match="pinrepl init-database"):
            await migrate.check_version(engine)
    finally:
        await engine.aclose()


async def test_the_apps_own_tables_and_alembic_setup_are_untouched(app):
    engine = engine_of(app)
    try:
        await make_0_1_0(engine)
        await on(engine,
                 "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)",
                 "INSERT INTO alembic_version VALUES ('3f1c2a9b7d00')",
                 "CREATE TABLE ledger (id INTEGER PRIMARY KEY, note TEXT)",
                 "INSERT INTO ledger VALUES (1, 'kept ✓')")
        await init_database(app)
        await init_database(app)
        assert await rows_of(engine, "alembic_version") == [("3f1c2a9b7d00",)]
        assert await rows_of(engine, "ledger") == [(1, "kept ✓")]
        assert await rows_of(engine, migrate.VERSION_TABLE) == [("0004",)]
    finally:
        await engine.aclose()


async def test_schedule_arguments_of_10_kb_are_inserted_once(app):
    """Defect 3: PostgreSQL refused arguments over about 2.7 KB (the btree limit of an
    index over the arguments themselves); the index holds their hash now."""
    await init_database(app)
    engine = engine_of(app)
    big = _args("x" * 10_000)
    row = {**_run("export", big, SLOT, "queued", tenant=None), "bot": None,
           "started_at": None, "finished_at": None, "args_hash": args_hash(big),
           "origin": "schedule", "attempt": 1, "priority": 0, "created_at": SLOT,
           "not_before": SLOT}
    dialect = postgresql if engine.url.get_backend_name() == "postgresql" else sqlite
    try:
        for _ in range(2):
            await on(engine, dialect.insert(RUNS).values(row).on_conflict_do_nothing())
        assert [r["args"] for r in await runs(engine)] == [big]
    finally:
        await engine.aclose()


def test_the_revisions_listed_are_the_scripts():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrate.SCRIPTS))
    config.set_main_option("path_separator", "os")
    scripts = ScriptDirectory.from_config(config)
    oldest_first = [s.revision for s in reversed(list(scripts.walk_revisions()))]
    assert tuple(oldest_first) == migrate.REVISIONS
    assert scripts.get_current_head() == migrate.HEAD


def test_the_check_needs_no_alembic():
    """`check_version` runs before every bot start, defer and listing: Alembic loads only
    for init-database."""
    import subprocess
    import sys

    code = ("import sys, pinrepl.runs.migrate; "
            "print(any(m.startswith('alembic') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out == "False\n"


async def test_a_transaction_holding_the_table_delays_the_upgrade_a_bounded_time(app):
    """Bots up while init-database upgrades: a revision waits for the table at most the lock
    timeout, then gives up in one line with nothing changed; run again, it upgrades."""
    engine = engine_of(app)
    if engine.is_sqlite:  # a SQLite reader in WAL mode holds no lock a writer waits for
        await engine.aclose()
        pytest.skip("PostgreSQL's table locks")
    try:
        await make_0_1_0(engine)
        async with engine.engine.connect() as reader:  # a bot in a read of the history
            await reader.execute(select(OLD_RUNS.c.id).limit(1))
            root, env = app
            result = await asyncio.to_thread(invoke, "init-database", "--app", root, env=env)
            await reader.rollback()
        assert result.exit_code == 2
        assert result.stderr.startswith("pinrepl: gave up after waiting 5 s for a lock")
        assert result.stderr.count("\n") == 1
        async with engine.engine.connect() as conn:
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns(RUNS.name)})
        assert "args_hash" not in columns
        assert (await init_database(app))[-1] == "pinrepl tables upgraded from 0001 to 0004"
    finally:
        await engine.aclose()


async def test_tables_dropped_by_hand_are_made_anew(app):
    await init_database(app)
    engine = engine_of(app)
    try:
        await on(engine, f"DROP TABLE {RUNS.name}", f"DROP TABLE {BOTS.name}")
        assert (await init_database(app))[-1] == "pinrepl tables created (version 0004)"
        await assert_tables_match_the_models(engine)
    finally:
        await engine.aclose()


@pytest.mark.parametrize("command", [
    ["bot", "--once"], ["defer", "--name", "anything"], ["list-background-job-runs"],
    ["list-background-jobs"],
])
async def test_commands_on_0_1_0_tables_say_so_in_one_line_and_exit_2(app, command):
    root, env = app
    (root / "jobs" / "anything.py").write_text(
        "from pinrepl import BackgroundJob\n\nclass Anything(BackgroundJob):\n"
        "    async def run(self):\n        pass\n")
    engine = engine_of(app)
    try:
        await make_0_1_0(engine)
    finally:
        await engine.aclose()
    result = await asyncio.to_thread(invoke, *command, "--app", root, env=env)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1].endswith(
        "pinrepl's tables have no version (pinrepl 0.1.0 made them); "
        "upgrade them with: pinrepl init-database")


# -- from pinrepl 0.2.0 (0002) ------------------------------------------------------------------


def _row_0_2_0(job: str, status: str, **extra: object) -> dict[str, object]:
    args = _args(*extra.pop("args", ()))
    row: dict[str, object] = {
        "job": job, "tenant_id": None, "args": args, "args_hash": args_hash(args),
        "scheduled_for": SLOT, "status": status, "bot": None, "started_at": None,
        "finished_at": None, "error": None, "origin": "defer", "attempt": 1,
        "parent_id": None, "priority": 0, "key": None, "created_at": SLOT,
        "timeout": None, "not_before": SLOT, "traceback": None, "retry_of": None,
    }
    row.update(extra)
    return row


#: A history of pinrepl 0.2.0: queued, running, a fan-out with its tenants, a retry.
HISTORY_0_2_0 = [
    _row_0_2_0("mail/digest", "queued", args=("café ☕",), key="digest", priority=-1),
    _row_0_2_0("sync", "running", bot="web-1:4242", started_at=SLOT, origin="schedule"),
    _row_0_2_0("fan", "running", origin="schedule", started_at=SLOT),
    _row_0_2_0("fan", "failed", tenant_id=1, parent_id=3, origin="schedule",
               started_at=SLOT, finished_at=SLOT, error="ValueError: boom ✗",
               traceback="Traceback ..."),
    _row_0_2_0("fan", "queued", tenant_id=1, parent_id=3, origin="schedule", attempt=2,
               retry_of=4, timeout=30.0),
]


async def upgrade_to(engine: Engine, revision: str) -> None:
    """pinrepl's tables made at `revision`, as that version's init-database left them."""
    from alembic import command

    from pinrepl.db.engine import IMMEDIATE

    await engine.check(create=True)
    source = engine.engine.execution_options(**{IMMEDIATE: True}) if engine.is_sqlite \
        else engine.engine

    def upgrade(sync: Any) -> None:
        command.upgrade(migrate._config(sync), revision)
        sync.commit()

    async with source.connect() as conn:
        await conn.run_sync(upgrade)


async def make_0_2_0(engine: Engine) -> None:
    """The database pinrepl 0.2.0's init-database and bots left: its tables at 0002, rows."""
    await upgrade_to(engine, "0002")
    columns = [c for c in RUNS.c if c.name != "cancel_requested_at"]
    old_runs = Table(RUNS.name, MetaData(), *(Column(c.name, c.type) for c in columns))
    async with engine.engine.begin() as conn:
        await conn.execute(insert(old_runs), HISTORY_0_2_0)
        await conn.execute(insert(BOTS), [BOT])


async def test_a_database_of_pinrepl_0_2_0_is_upgraded_in_place_keeping_every_row(app):
    engine = engine_of(app)
    try:
        await make_0_2_0(engine)
        assert await rows_of(engine, migrate.VERSION_TABLE) == [("0002",)]
        with pytest.raises(TablesOutdated, match="at version 0002, this pinrepl needs 0004"):
            await migrate.check_version(engine)
        assert (await init_database(app))[-1] == "pinrepl tables upgraded from 0002 to 0004"

        upgraded = await runs(engine)
        assert [{k: row[k] for k in HISTORY_0_2_0[0]} for row in upgraded] == [
            {**row, "scheduled_for": SLOT} for row in HISTORY_0_2_0]
        assert [row["cancel_requested_at"] for row in upgraded] == [None] * 5
        assert await rows_of(engine, PAUSES.name) == []
        assert await rows_of(engine, BOTS.name) != []
        await assert_tables_match_the_models(engine)
        fresh = engine_of(app)
        try:
            await migrate.check_version(fresh)
        finally:
            await fresh.aclose()
        assert (await init_database(app))[-1] == "pinrepl tables up to date (version 0004)"
        assert await runs(engine) == upgraded
    finally:
        await engine.aclose()


async def test_a_database_of_pinrepl_0_3_0_keeps_its_bots_judged_by_the_default_lease(app):
    """0004 adds each bot's lease (`expires_at`): a bot up during the upgrade has none, and
    its peers judge it by their own lease, as 0.3.0 did."""
    from pinrepl.runs.repository import Repository

    engine = engine_of(app)
    try:
        await upgrade_to(engine, "0003")
        async with engine.engine.begin() as conn:
            await conn.execute(insert(BOTS), [BOT])  # a bot of 0.3.0, last heard at SLOT
        assert (await init_database(app))[-1] == "pinrepl tables upgraded from 0003 to 0004"
        await assert_tables_match_the_models(engine)
        (bot,) = await Repository(engine).bots()
        assert (bot.id, bot.beat_at, bot.expires_at) == (BOT["id"], SLOT, None)
        assert bot.up(SLOT + timedelta(seconds=29)) and not bot.up(SLOT + timedelta(seconds=30))
    finally:
        await engine.aclose()
