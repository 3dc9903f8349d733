"""The pytest plugin (registered through the `pytest11` entry point): every
`test_*.transcript` file is a test item that replays the transcript against its app, and
plain tests get the `pinrepl_app` fixture: their app, open, on the same database.

The app is the nearest folder up from the transcript or test file with a `jobs` folder or
a `[tool.pinrepl]` table. By default it runs on a test database made once per test run
and app (`pinrepl_database = test`); `pinrepl_database = app` uses the app's own
(`PINREPL_DATABASE_URL` applies). Each file replays, and each test using `pinrepl_app`
runs, in a sandbox unless the ini option `pinrepl_sandbox` is false. The fixture is async:
pytest-asyncio runs it, and a test using it without pytest-asyncio fails saying so.

pytest loads every plugin when it starts, so the app, the console and SQLAlchemy are
imported only when a transcript or a test using the fixture runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..app import App
    from ..settings import Settings

_async_fixture: Any
try:  # pytest-asyncio runs an async fixture in the test's loop, in its strict mode too
    import pytest_asyncio

    _async_fixture = pytest_asyncio.fixture
except ImportError:  # then nothing runs it: `pytest_fixture_setup` says so
    _async_fixture = pytest.fixture

#: A test using the async `pinrepl_app` where pytest-asyncio does not run (is not installed,
#: or `-p no:asyncio`) fails with this line instead of pytest's generic async error.
NEEDS_PYTEST_ASYNCIO = ("the pinrepl_app fixture is async and needs pytest-asyncio: "
                        "pip install pytest-asyncio")

_test_databases = pytest.StashKey[dict[Path, "Settings"]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "pinrepl_sandbox", type="bool", default=True,
        help="replay pinrepl transcripts in a sandbox (writes rolled back); default true",
    )
    parser.addini(
        "pinrepl_database", default="test",
        help="pinrepl transcripts replay on a 'test' database made for the run (default) "
             "or on the 'app' database",
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name.startswith("test_") and file_path.suffix == ".transcript":
        return TranscriptFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
                         ) -> None:
    """Before pytest sets up `pinrepl_app`: without pytest-asyncio, fail in one line."""
    if fixturedef.argname == "pinrepl_app" and \
            not request.config.pluginmanager.hasplugin("asyncio"):
        pytest.fail(NEEDS_PYTEST_ASYNCIO, pytrace=False)


def pytest_unconfigure(config: pytest.Config) -> None:
    made = config.stash.get(_test_databases, {})
    if made:
        from .transcripts import drop_test_database  # loaded only if a transcript ran

        async def drop() -> None:
            for settings in made.values():
                await drop_test_database(settings)

        asyncio.run(drop())


@_async_fixture
async def pinrepl_app(request: pytest.FixtureRequest) -> AsyncIterator[App]:
    """The app of the test's folder, open, on the database transcripts replay on (the test
    database made for the run, by default); the test runs in its sandbox, so its writes
    and those of the jobs it runs are rolled back when it ends."""
    from ..app import App  # loaded only when a test asks for the app

    settings = await _settings_for(request.config, request.path)
    async with AsyncExitStack() as stack:
        app = await stack.enter_async_context(App(settings))
        if request.config.getini("pinrepl_sandbox"):
            await stack.enter_async_context(app.sandbox())
        yield app


async def _settings_for(config: pytest.Config, path: Path) -> Settings:
    """The settings of the app of `path` (the nearest app above it) on the database its
    tests use: the test database made for this run, unless the ini says `app`."""
    from ..settings import Settings, find_app  # loaded only when a test needs them
    from .transcripts import create_test_database

    settings = Settings.load(find_app(path.parent))
    if config.getini("pinrepl_database") == "app":
        return settings
    made = config.stash.setdefault(_test_databases, {})
    if settings.root not in made:
        made[settings.root] = await create_test_database(settings)
    return made[settings.root]


class TranscriptFile(pytest.File):
    def collect(self) -> Any:
        yield TranscriptItem.from_parent(self, name=self.path.name)


class TranscriptMismatch(Exception):
    pass


class TranscriptItem(pytest.Item):
    def runtest(self) -> None:
        from ..app import App  # loaded only when a transcript runs
        from .transcripts import Transcript, replay

        transcript = Transcript.read(self.path)
        sandbox = self.config.getini("pinrepl_sandbox")

        async def run() -> Any:
            async with App(await _settings_for(self.config, self.path)) as app:
                return await replay(transcript, app, sandbox=sandbox)

        failures = [o for o in asyncio.run(run()) if not o.passed]
        if failures:
            raise TranscriptMismatch("\n\n".join(o.difference(self.path) for o in failures))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
                     ) -> str | Any:
        from ..errors import PinreplError  # loaded only when a transcript runs

        if isinstance(excinfo.value, TranscriptMismatch | PinreplError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"transcript {self.path.name}"
