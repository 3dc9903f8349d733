"""`repl --read-only`: the database itself refuses every write of the session, the REPL's
and those of the jobs it runs or defers, as `pinrepl.ReadOnlySession` in one line; reads,
`jobs` and `echo()` work. On SQLite and PostgreSQL, through a transcript replayed on a
read-only app (no sandbox: nothing may need rolling back), the CLI in this process, and
the prompt in a pseudo-terminal."""

from __future__ import annotations

from pathlib import Path

import pinrepl
from pinrepl import App, PinreplError, ReadOnlySession
from pinrepl.console.transcripts import Transcript, replay

from ..conftest import invoke, write_example_app
from .terminal import Repl

TRANSCRIPT = Path(__file__).with_name("read_only.transcript")


def test_read_only_session_is_a_public_pinrepl_error():
    assert pinrepl.ReadOnlySession is ReadOnlySession
    assert issubclass(ReadOnlySession, PinreplError)
    assert "ReadOnlySession" in pinrepl.__all__


async def counts(app: App) -> tuple[int, int, int]:
    database = app.database()
    try:
        return (await database.users.count(), await database.notifications.count(),
                await database.background_job_runs.count())
    finally:
        await database.aclose()


async def test_every_write_is_refused_by_the_database(example_app):
    before = await counts(example_app)
    async with App(example_app.settings, read_only=True) as app:
        outcomes = await replay(Transcript.read(TRANSCRIPT), app, sandbox=False)
    failed = [o.difference(TRANSCRIPT) for o in outcomes if not o.passed]
    assert not failed, "\n\n".join(failed)
    assert await counts(example_app) == before == (6, 12, 0)


def test_the_cli_refuses_a_write_in_one_line_and_exits_1(tmp_path):
    root = write_example_app(tmp_path / "app", {})
    code = ("print(await database.users.count()); "
            "await database.users.insert(name='eve', email='eve@example.com')")
    result = invoke("repl", "--read-only", "--execute", code, "--app", root)
    assert result.exit_code == 1, result.output
    assert result.stdout == "6\n"
    assert result.stderr.splitlines()[-1].startswith(
        "pinrepl.errors.ReadOnlySession: the session is read-only (--read-only): "
        "the database refused to write: attempt to write a readonly database")
    result = invoke("repl", "--execute", "print(await database.users.count())", "--app", root)
    assert result.stdout == "6\n"  # nothing was written
    assert "--read-only" in invoke("repl", "--help").stdout


def test_the_prompt_shows_read_only(tmp_path):
    root = write_example_app(tmp_path / "app", {})
    repl = Repl(root, tmp_path, "--read-only", "--tenant", "acme")
    repl.expect("read-only: the database refuses every write")
    repl.expect("pinrepl [acme read-only] >")
    repl.run("await database.users.insert(name='eve', email='eve@example.com')",
             "ReadOnlySession: the session is read-only (--read-only)")
    repl.run("await database.users.count()", "3", "pinrepl [acme read-only] >")
    assert repl.quit() == 0
