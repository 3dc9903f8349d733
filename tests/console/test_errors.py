"""Errors show as Python shows them, the same way at the prompt, with `--execute`, on
stdin and in transcripts: exception groups with every member, `from None` respected, a
syntax error as line, caret and message, and no frames of pinrepl or ptpython."""

from __future__ import annotations

import pytest

from pinrepl import App
from pinrepl.console.transcripts import Transcript, replay

from ..conftest import invoke, write_example_app
from .terminal import Repl

JOBS = {
    "picky.py": """
        from pinrepl import BackgroundJob

        class Picky(BackgroundJob):
            multi_tenant = True

            async def run(self):
                if self.tenant.name == "globex":
                    raise ValueError(f"no {self.tenant.name} today")
                print(f"ok {self.tenant.name}")
    """,
    "boom.py": """
        from pinrepl import BackgroundJob

        def explode():
            raise RuntimeError("boom")

        class Boom(BackgroundJob):
            async def run(self):
                explode()
    """,
}

GROUP = [
    "  + Exception Group Traceback (most recent call last):",
    '  |   File "{file}", line 1, in <module>',
    "  | pinrepl.errors.BackgroundJobFailed: background job 'picky' failed for 1 of 3 tenants "
    "(1 sub-exception)",
    "  +-+---------------- 1 ----------------",
    "    | Traceback (most recent call last):",
    '    |   File "{app}/jobs/picky.py", line 9, in run',
    '    |     raise ValueError(f"no {{self.tenant.name}} today")',
    "    | ValueError: no globex today",
    "    | in background job 'picky' for tenant 2 (globex)",
    "    +------------------------------------",
]

SYNTAX = ['  File "{file}", line 1', "    x = 1 +* 2", "           ^",
          "SyntaxError: invalid syntax"]


@pytest.fixture
def app(tmp_path):
    return write_example_app(tmp_path / "app", JOBS)


def expected(lines, app, file):
    return "\n".join(lines).format(app=app, file=file) + "\n"


def output_of(screen, line):
    """The lines the screen shows after the last echo of the typed `line`, without the
    prompt (output printed while the next prompt shows goes above it)."""
    after = screen.rsplit(f"pinrepl > {line}", 1)[1].split("\n", 1)[1]
    return "\n".join(shown for shown in after.split("\n")
                     if shown.strip() and not shown.strip().startswith("pinrepl >"))


def test_a_fan_out_failure_shows_every_tenant_failure_with_execute_and_stdin(app):
    executed = invoke("repl", "--app", app, "-e", "await runBackgroundJob('picky')")
    assert (executed.exit_code, executed.stdout) == (1, "ok acme\nok initech\n")
    assert executed.stderr == expected(GROUP, app, "<string>")
    piped = invoke("repl", "--app", app, input="await runBackgroundJob('picky')\n")
    assert piped.stderr == expected(GROUP, app, "<stdin>")


def test_a_fan_out_failure_shows_every_tenant_failure_at_the_prompt(app, tmp_path):
    repl = Repl(app, tmp_path)
    repl.expect("jobs loaded")
    screen = repl.run("await runBackgroundJob('picky')", "+------------------------------------")
    assert output_of(screen, "await runBackgroundJob('picky')") == \
        "ok acme\nok initech\n" + expected(GROUP, app, "<stdin>").rstrip("\n")
    repl.run("'still here'", "'still here'")
    assert repl.quit() == 0


def test_from_none_is_respected_and_no_pinrepl_frames_show(app, tmp_path):
    repl = Repl(app, tmp_path)
    repl.expect("jobs loaded")
    screen = repl.run("await runBackgroundJob('bom')", "(did you mean: boom?)")
    assert output_of(screen, "await runBackgroundJob('bom')") == (  # no KeyError before it
        "Traceback (most recent call last):\n"
        '  File "<stdin>", line 1, in <module>\n'
        "pinrepl.errors.UnknownBackgroundJob: unknown background job 'bom' "
        "(did you mean: boom?)"
    )
    assert repl.quit() == 0


def test_a_syntax_error_is_line_caret_and_message(app, tmp_path):
    repl = Repl(app, tmp_path)
    repl.expect("jobs loaded")
    screen = repl.run("x = 1 +* 2", "SyntaxError: invalid syntax")
    assert output_of(screen, "x = 1 +* 2") == expected(SYNTAX, app, "<stdin>").rstrip("\n")
    assert repl.quit() == 0
    executed = invoke("repl", "--app", app, "-e", "x = 1 +* 2")
    assert (executed.exit_code, executed.stderr) == (1, expected(SYNTAX, app, "<string>"))


def test_a_failing_job_shows_its_own_frames_only(app):
    result = invoke("repl", "--app", app, "-e", "await runBackgroundJob('boom')")
    assert result.stderr == (
        "Traceback (most recent call last):\n"
        '  File "<string>", line 1, in <module>\n'
        f'  File "{app}/jobs/boom.py", line 9, in run\n'
        "    explode()\n"
        f'  File "{app}/jobs/boom.py", line 5, in explode\n'
        '    raise RuntimeError("boom")\n'
        "RuntimeError: boom\n"
        "in background job 'boom'\n"
    )


def test_a_database_error_shows_the_line_typed_and_the_error_not_the_drivers_frames(app):
    """SQLAlchemy's and aiosqlite's frames are machinery too: a unique key refused is the
    driver's error, the line typed, and SQLAlchemy's error with its statement."""
    line = "await database.tenants.insert(name='acme')"  # the example app has an acme
    result = invoke("repl", "--app", app, "-e", line)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[:6] == [
        "sqlite3.IntegrityError: UNIQUE constraint failed: tenants.name",
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        "Traceback (most recent call last):",
        '  File "<string>", line 1, in <module>',
    ]
    assert lines[6] == ("sqlalchemy.exc.IntegrityError: (sqlite3.IntegrityError) UNIQUE "
                        "constraint failed: tenants.name")
    assert lines[7].startswith("[SQL: INSERT INTO tenants ") and len(lines) == 10


async def test_a_syntax_error_in_a_transcript_shows_as_at_the_prompt(app):
    path = app / "test_syntax.transcript"
    path.write_text(
        "pinrepl > 1 + 1\n2\n"
        "pinrepl > x = 1 +* 2\n" + expected(SYNTAX, app, "<stdin>") +
        "pinrepl > for i in range(2):\n...     x = 1 +* 2\n...\n"
        '  File "<stdin>", line 2\n    x = 1 +* 2\n           ^\nSyntaxError: invalid syntax\n'
    )
    async with App.open(app) as opened:
        outcomes = await replay(Transcript.read(path), opened, sandbox=False)
    assert [o.actual for o in outcomes[1:]] == [o.example.expected for o in outcomes[1:]]
    assert all(o.passed for o in outcomes)
