"""Small helpers shared by the tests: temp app folders, the CLI in a subprocess, databases."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pinrepl import App

REPO = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("PINREPL_TEST_DATABASE_URL")
needs_postgres = pytest.mark.skipif(
    not PG_URL, reason="PINREPL_TEST_DATABASE_URL is not set (e.g. postgresql://127.0.0.1/test)"
)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a pinrepl subprocess: no PINREPL_* leaking in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINREPL_")}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinrepl", *args], cwd=cwd, env=env or clean_env(),
        capture_output=True, text=True, input=input, timeout=timeout,
    )


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


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Path]:
    return lambda jobs, **kw: write_app(tmp_path / "app", jobs, **kw)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=needs_postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    return PG_URL  # type: ignore[return-value]


async def reset_database(app: App) -> None:
    """Drop the app's tables (PostgreSQL keeps them between tests), then create them."""
    from pinrepl import Model

    tables = [m.__table__ for m in app.engine.tables.values()]
    await app.engine.check(create=True)
    async with app.engine.engine.begin() as conn:
        await conn.run_sync(Model.metadata.drop_all, tables=tables)


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
