"""The pytest plugin (registered through the `pytest11` entry point): every
`test_*.transcript` file is a test item that replays the transcript against its app.

The app is the nearest folder up from the transcript with a `jobs` folder or a
`[tool.pinrepl]` table; its database is the app's own (`PINREPL_DATABASE_URL` applies).
Each replay runs in a sandbox unless the ini option `pinrepl_sandbox` is false.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "pinrepl_sandbox", type="bool", default=True,
        help="replay pinrepl transcripts in a sandbox (writes rolled back); default true",
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name.startswith("test_") and file_path.suffix == ".transcript":
        return TranscriptFile.from_parent(parent, path=file_path)
    return None


class TranscriptFile(pytest.File):
    def collect(self) -> Any:
        yield TranscriptItem.from_parent(self, name=self.path.name)


class TranscriptMismatch(Exception):
    pass


class TranscriptItem(pytest.Item):
    def runtest(self) -> None:
        from .app import App
        from .transcripts import Transcript, find_app, replay

        transcript = Transcript.read(self.path)
        sandbox = self.config.getini("pinrepl_sandbox")

        async def run() -> Any:
            async with App.open(find_app(self.path)) as app:
                return await replay(transcript, app, sandbox=sandbox)

        failures = [o for o in asyncio.run(run()) if not o.passed]
        if failures:
            raise TranscriptMismatch("\n\n".join(o.difference(self.path) for o in failures))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
                     ) -> str | Any:
        from .errors import PinreplError

        if isinstance(excinfo.value, TranscriptMismatch | PinreplError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"transcript {self.path.name}"
