"""The pytest plugin (registered through the `pytest11` entry point): every
`test_*.transcript` file is a test item that replays the transcript against its app.

The app is the nearest folder up from the transcript with a `jobs` folder or a
`[tool.pinrepl]` table. By default the replay runs on a test database made once per test
run and app (`pinrepl_database = test`); `pinrepl_database = app` uses the app's own
(`PINREPL_DATABASE_URL` applies). Each file replays in a sandbox unless the ini option
`pinrepl_sandbox` is false.

pytest loads every plugin when it starts, so the app, the console and SQLAlchemy are
imported only when a transcript runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..settings import Settings

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


def pytest_unconfigure(config: pytest.Config) -> None:
    made = config.stash.get(_test_databases, {})
    if made:
        from .transcripts import drop_test_database  # loaded only if a transcript ran

        async def drop() -> None:
            for settings in made.values():
                await drop_test_database(settings)

        asyncio.run(drop())


class TranscriptFile(pytest.File):
    def collect(self) -> Any:
        yield TranscriptItem.from_parent(self, name=self.path.name)


class TranscriptMismatch(Exception):
    pass


class TranscriptItem(pytest.Item):
    def runtest(self) -> None:
        from ..app import App  # loaded only when a transcript runs
        from ..settings import Settings, find_app
        from .transcripts import Transcript, create_test_database, replay

        transcript = Transcript.read(self.path)
        sandbox = self.config.getini("pinrepl_sandbox")
        settings = Settings.load(find_app(self.path.parent))
        if self.config.getini("pinrepl_database") != "app":
            made = self.config.stash.setdefault(_test_databases, {})
            if settings.root not in made:
                made[settings.root] = asyncio.run(create_test_database(settings))
            settings = made[settings.root]

        async def run() -> Any:
            async with App(settings) as app:
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
