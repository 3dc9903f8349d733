"""Small helpers shared by the tests: temp app folders, the CLI (in this process through
click's CliRunner, or in a subprocess where a real process matters), databases.

No test leaks environment into another: the CLI gets its environment explicitly (PINREPL_*
variables from outside are removed), the root logger is restored, and an app that closes
takes its folder off `sys.path` itself.
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pinrepl import App
from pinrepl.cli import cli

REPO = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("PINREPL_TEST_DATABASE_URL")
needs_postgres = pytest.mark.skipif(
    not PG_URL, reason="PINREPL_TEST_DATABASE_URL is not set (e.g. postgresql://127.0.0.1/test)"
)


def pytest_configure(config: pytest.Config) -> None:
    """Compile pinrepl's modules once, before any test: the suite starts hundreds of
    `pinrepl` subprocesses, and where PYTHONDONTWRITEBYTECODE is set (this machine sets it)
    each would compile them again (about 0.4 s of CPU each). `compileall` writes the cache
    whatever that variable says; it is ignored by git."""
    if not hasattr(config, "workerinput"):  # once, in pytest-xdist's controller
        compileall.compile_dir(REPO / "pinrepl", quiet=1)


#: Multi-tenant jobs the runner's and the CLI's fan-out tests both run.
FAN_OUT_JOBS = {
    "flaky.py": """
        from pinrepl import BackgroundJob

        class Flaky(BackgroundJob):
            multi_tenant = True

            async def run(self):
                if self.tenant.name in ("globex", "initech"):
                    raise ValueError(f"boom in {self.tenant.name}")
                print("ok", self.tenant.name)
    """,
    "exits_in_globex.py": """
        import sys
        from pinrepl import BackgroundJob

        class ExitsInGlobex(BackgroundJob):
            multi_tenant = True

            async def run(self):
                if self.tenant.name == "globex":
                    sys.exit(3)
                print("ran", self.tenant.name)
    """,
    "active_only.py": """
        from pinrepl import BackgroundJob

        class ActiveOnly(BackgroundJob):
            multi_tenant = True

            def tenants_filter(self, tenants):
                return tenants.where(active=True)

            async def run(self):
                print("active", self.tenant.name)
    """,
    "filter_raises.py": """
        from pinrepl import BackgroundJob

        class FilterRaises(BackgroundJob):
            multi_tenant = True

            def tenants_filter(self, tenants):
                raise KeyError("no such filter")

            async def run(self):
                pass
    """,
    "filter_typo.py": """
        from pinrepl import BackgroundJob

        class FilterTypo(BackgroundJob):
            multi_tenant = True

            def tenants_filter(self, tenants):
                return tenants.where(plan="pro")

            async def run(self):
                pass
    """,
    "filter_returns_list.py": """
        from pinrepl import BackgroundJob

        class FilterReturnsList(BackgroundJob):
            multi_tenant = True

            def tenants_filter(self, tenants):
                return ["acme"]

            async def run(self):
                pass
    """,
}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a pinrepl subprocess: no PINREPL_* leaking in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINREPL_")}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m pinrepl ARGS` in a subprocess (for what needs a real process: a terminal,
    a signal, the interpreter's own environment)."""
    return subprocess.run(
        [sys.executable, "-m", "pinrepl", *args], cwd=cwd, env=env or clean_env(),
        capture_output=True, text=True, input=input, timeout=timeout,
    )


def invoke(*args: str | Path, env: dict[str, str] | None = None, input: str | None = None
           ) -> Result:
    """`pinrepl ARGS` in this process (click's CliRunner), with exactly the PINREPL_*
    variables of `env`; the root logger (which the CLI configures) is restored after."""
    outside = {key: None for key in os.environ if key.startswith("PINREPL_")}
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        return CliRunner().invoke(
            cli, [str(arg) for arg in args], input=input, env={**outside, **(env or {})},
            catch_exceptions=False, prog_name="pinrepl",
        )
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


def one_line(result: Result, code: int = 2) -> str:
    """The one line a user error prints (after checking the exit code and that nothing else
    was printed), without 'pinrepl: ' and the newline."""
    assert (result.exit_code, result.stdout) == (code, ""), result.output
    assert result.stderr.startswith("pinrepl: ") and result.stderr.count("\n") == 1, \
        result.stderr
    return result.stderr.removeprefix("pinrepl: ").removesuffix("\n")


def write_app(root: Path, jobs: dict[str, str], pyproject: str = "", models: str | None = None
              ) -> Path:
    """An app folder: `jobs` maps a path under jobs/ to its source."""
    root.mkdir(parents=True, exist_ok=True)
    if pyproject:
        (root / "pyproject.toml").write_text(textwrap.dedent(pyproject))
    if models is not None:
        (root / "models.py").write_text(textwrap.dedent(models))
    for rel, source in jobs.items():
        path = root / "jobs" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    (root / "jobs").mkdir(exist_ok=True)
    return root


def write_demo_app(root: Path, jobs: dict[str, str]) -> Path:
    """An app of `jobs` over the example app's models, its demo data in its own SQLite file
    (made by the CLI, in a subprocess)."""
    write_app(root, jobs)
    (root / "models.py").write_text((REPO / "models.py").read_text())
    result = run_cli("init-database", "--demo", cwd=root)
    assert result.returncode == 0, result.stderr
    return root


def write_example_app(root: Path, jobs: dict[str, str], demo: bool = True) -> Path:
    """An app of `jobs` over the example app's models (linked, so that this process loads
    them once), with its demo data in its own SQLite file, made in this process."""
    write_app(root, jobs)
    (root / "models.py").symlink_to(REPO / "models.py")
    if demo:
        result = invoke("init-database", "--demo", "--app", root)
        assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Path]:
    return lambda jobs, **kw: write_app(tmp_path / "app", jobs, **kw)


async def _on_postgres(url: str, *statements: str) -> None:
    import asyncpg  # only the PostgreSQL tests need it
    from sqlalchemy.engine import make_url

    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a new, empty database on the test PostgreSQL server, dropped afterwards:
    tests writing there meet no rows of another test run, whoever else uses the server."""
    from sqlalchemy.engine import make_url

    assert PG_URL is not None
    name = f"pinrepl_{uuid.uuid4().hex[:16]}"
    asyncio.run(_on_postgres(PG_URL, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_on_postgres(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this test run's own (see `database_url`)."""
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=needs_postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of the test's own, on SQLite and on PostgreSQL (this run's
    database, emptied: cheaper than a new one per test)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    url: str = request.getfixturevalue("postgres_url")
    asyncio.run(_on_postgres(url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public"))
    return url


async def reset_database(app: App) -> None:
    """Drop the app's tables and pinrepl's version table (PostgreSQL keeps them between
    tests), so that `init-database` creates them anew."""
    from pinrepl import Model
    from pinrepl.runs.migrate import VERSION_TABLE

    tables = [m.__table__ for m in app.engine.tables.values()]
    await app.engine.check(create=True)
    async with app.engine.engine.begin() as conn:
        await conn.run_sync(Model.metadata.drop_all, tables=tables)
        await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {VERSION_TABLE}")


@pytest.fixture
async def example_app(database_url: str) -> AsyncIterator[App]:
    """The repository's example app with its demo data, in a database of its own."""
    app = App.open(REPO, environ={"PINREPL_DATABASE_URL": database_url})
    await reset_database(app)
    await app.init_database(demo=True, echo=lambda _line: None)
    try:
        yield app
    finally:
        await app.aclose()
