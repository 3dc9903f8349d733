"""Transcripts: parsing, matching, replay, `pinrepl transcript`, and the pytest plugin."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

from pinrepl import App, TranscriptError
from pinrepl.console.transcripts import Transcript, matches, replay, updated

from ..conftest import REPO, clean_env, invoke, run_cli, write_app, write_example_app

JOB = """
from pinrepl import BackgroundJob

class Greet(BackgroundJob):
    async def run(self, name):
        if name == "nobody":
            raise LookupError("nobody to greet")
        print(f"hello {name}")
"""


def parse(text, name="t.transcript"):
    return Transcript.parse(textwrap.dedent(text), __import__("pathlib").Path(name))


def test_parse_examples_continuations_and_comments():
    transcript = parse("""\
        # a comment before the first prompt
        pinrepl > 1 + 1
        2
        pinrepl [acme sandbox] > for i in range(2):
        ...     print(i)
        ...
        0
        1

        pinrepl > x = 3
        """)
    assert [(e.line, e.source, e.expected) for e in transcript.examples] == [
        (2, "1 + 1", "2\n"),
        (4, "for i in range(2):\n    print(i)\n", "0\n1\n"),
        (10, "x = 3", ""),
    ]


def test_a_bare_ellipsis_after_a_simple_statement_is_output():
    transcript = parse("""\
        pinrepl > print('a'); print('b'); print('c')
        ...
        c
        pinrepl > if True:
        ...     print('x')
        ...
        x
        """)
    first, second = transcript.examples
    assert (first.source, first.expected) == ("print('a'); print('b'); print('c')", "...\nc\n")
    assert (second.source, second.expected) == ("if True:\n    print('x')\n", "x\n")
    assert matches(first.expected, "a\nb\nc\n")


@pytest.mark.parametrize(("text", "message"), [
    ("", "t.transcript: no prompt lines"),
    ("# only a comment\n", "t.transcript: no prompt lines"),
    ("hello\npinrepl > 1\n", "t.transcript:1: text before the first prompt line"),
    ("pinrepl > for i in x:\n...print(i)\n", "t.transcript:2: malformed continuation line"),
    ("pinrepl > 1\n1\npinrepl > for i in range(3):\n0\n",
     "t.transcript:3: the code at this prompt is incomplete"),
])
def test_malformed_transcripts_name_the_file_and_line(text, message):
    with pytest.raises(TranscriptError) as error:
        parse(text)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(("expected", "actual", "ok"), [
    ("2\n", "2\n", True),
    ("2\n", "3\n", False),
    ("a\n...\nz\n", "a\nb\nc\nz\n", True),
    ("hello ...!\n", "hello world!\n", True),
    ("Traceback (most recent call last):\n  File x\nValueError: bad\n",
     "Traceback (most recent call last):\n  ...\nValueError: bad\n", True),
    ("Traceback (most recent call last):\n...\nValueError: bad\n",
     "Traceback (most recent call last):\n  ...\nValueError: worse\n", False),
    ("out\nTraceback (most recent call last):\n  ...\nKeyError: ...\n",
     "out\nTraceback (most recent call last):\n  ...\nKeyError: 'k'\n", True),
    ("ValueError: bad\n", "Traceback (most recent call last):\n  ...\nValueError: bad\n", False),
])
def test_matching(expected, actual, ok):
    assert matches(expected, actual) is ok


@pytest.fixture
async def app(tmp_path):
    root = write_app(tmp_path / "app", {"greet.py": JOB})
    async with App.open(root) as app:
        yield app


async def test_replay_passes_fails_and_updates(app, tmp_path):
    transcript = parse("""\
        pinrepl > await runBackgroundJob('greet', 'ann')
        hello ann
        pinrepl > await runBackgroundJob('greet', 'bob')
        hello ann
        pinrepl > await runBackgroundJob('greet', 'nobody')
        Traceback (most recent call last):
          ...
        LookupError: nobody to greet
        in background job 'greet'
        pinrepl > value = 41
        pinrepl > value + 1
        41
        """)
    outcomes = await replay(transcript, app, sandbox=False)
    assert [o.passed for o in outcomes] == [True, False, True, True, False]
    assert outcomes[1].difference(transcript.path) == (
        "t.transcript:3: pinrepl > await runBackgroundJob('greet', 'bob')\n"
        "--- expected\n+++ actual\n@@ -1 +1 @@\n-hello ann\n+hello bob"
    )
    rewritten = updated(transcript, outcomes)
    assert "hello bob" in rewritten and "\n42\n" in rewritten
    again = Transcript.parse(rewritten, transcript.path)
    assert all(o.passed for o in await replay(again, app, sandbox=False))


LOGS = """
import logging
from pinrepl import BackgroundJob

class Logs(BackgroundJob):
    async def run(self):
        root = logging.getLogger()
        print(repr((root.level, root.handlers)))
        logging.getLogger("jobs.logs").info("by the jobs folder's name")
        logging.getLogger(__name__).warning("by the module's name")
        logging.getLogger("jobs.logs").debug("not shown")
"""


async def test_a_replay_shows_what_jobs_log_and_leaves_the_root_logger_alone(tmp_path):
    root = logging.getLogger()
    as_found = (root.level, list(root.handlers))
    transcript = parse(
        "pinrepl > await runBackgroundJob('logs')\n"
        f"{as_found!r}\n"
        "INFO jobs.logs: by the jobs folder's name\n"
        "WARNING ...logs: by the module's name\n"
    )
    async with App.open(write_app(tmp_path / "app", {"logs.py": LOGS})) as app:
        (outcome,) = await replay(transcript, app, sandbox=False)
    assert outcome.passed, outcome.actual
    assert (root.level, root.handlers) == as_found


async def test_each_replay_gets_a_fresh_namespace(app):
    first = parse("pinrepl > secret = 1\n")
    second = parse("pinrepl > secret\nTraceback (most recent call last):\n  ...\n"
                   "NameError: name 'secret' is not defined\n")
    await replay(first, app, sandbox=False)
    assert all(o.passed for o in await replay(second, app, sandbox=False))


def test_cli_transcript_diff_and_update(tmp_path):
    root = write_app(tmp_path / "app", {"greet.py": JOB})
    path = root / "session.transcript"
    path.write_text("pinrepl > await runBackgroundJob('greet', 'ann')\nhello bob\n")
    failed = run_cli("transcript", str(path), cwd=root)
    assert failed.returncode == 1
    assert "session.transcript:1: pinrepl > await runBackgroundJob('greet', 'ann')" \
        in failed.stderr
    assert "-hello bob\n+hello ann" in failed.stderr
    updated_run = run_cli("transcript", "--update", str(path), cwd=root)
    assert updated_run.returncode == 0
    assert path.read_text() == "pinrepl > await runBackgroundJob('greet', 'ann')\nhello ann\n"
    passed = run_cli("transcript", str(path), cwd=root)
    assert (passed.returncode, passed.stdout.strip()) == (
        0, f"{path}: 1 of 1 examples passed")


def test_cli_transcript_bad_file_is_one_line(tmp_path):
    root = write_app(tmp_path / "app", {"greet.py": JOB})
    (root / "bad.transcript").write_text("nothing here\n")
    result = run_cli("transcript", "bad.transcript", cwd=root)
    assert result.returncode == 2
    assert result.stderr.endswith("bad.transcript:1: text before the first prompt line "
                                  "(start a prompt with 'pinrepl > '; comments start with '#')\n")
    assert result.stderr.count("\n") == 1


def test_cli_transcript_that_is_not_text_is_one_line(tmp_path):
    root = write_app(tmp_path / "app", {"greet.py": JOB})
    (root / "binary.transcript").write_bytes(b"\xff\xfe\x00pinrepl")
    result = run_cli("transcript", "binary.transcript", cwd=root)
    assert result.returncode == 2
    assert "binary.transcript: cannot read it as a UTF-8 text file" in result.stderr
    assert result.stderr.count("\n") == 1


def test_pytest_plugin_collects_transcripts(tmp_path):
    root = write_app(tmp_path / "app", {"greet.py": JOB})
    (root / "tests").mkdir()
    (root / "tests" / "test_greet.transcript").write_text(
        "pinrepl > await runBackgroundJob('greet', 'ann')\nhello ann\n")
    (root / "tests" / "test_wrong.transcript").write_text(
        "pinrepl > 1 + 1\n2\n\npinrepl > await runBackgroundJob('greet', 'bob')\nhello ann\n")
    (root / "tests" / "notes.transcript").write_text("not collected\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=root, env=clean_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed" in result.stdout
    assert "test_wrong.transcript:4: pinrepl > await runBackgroundJob('greet', 'bob')" \
        in result.stdout
    assert "-hello ann\n+hello bob" in result.stdout


def test_example_transcripts_exist_for_each_seed_example():
    text = "".join(p.read_text() for p in (REPO / "tests").glob("test_*.transcript"))
    for job in ("send-newsletter", "deliver-notifications", "send-email", "risky-operation"):
        assert f"runBackgroundJob('{job}'" in text or f"run_background_job('{job}'" in text


# -- exception groups, escapes and comments ---------------------------------------------------

PICKY = """
from pinrepl import BackgroundJob

class Picky(BackgroundJob):
    multi_tenant = True

    async def run(self):
        if self.tenant.name == "globex":
            raise ValueError(f"no {self.tenant.name} today")
        print(f"ok {self.tenant.name}")
"""


def test_a_transcript_matches_the_members_of_an_exception_group(tmp_path):
    root = write_example_app(tmp_path / "app", {"picky.py": PICKY}, demo=False)
    path = root / "group.transcript"
    path.write_text(
        "pinrepl > await runBackgroundJob('picky')\n"
        "ok acme\nok initech\n"
        "Traceback (most recent call last):\n  ...\n"
        "pinrepl.errors.BackgroundJobFailed: ...\n"
        "ValueError: no globex today\n"
        "in background job 'picky' for tenant 2 (globex)\n"
    )
    assert invoke("transcript", path).exit_code == 0
    path.write_text(path.read_text().replace("no globex", "no acme"))
    failed = invoke("transcript", path)
    assert failed.exit_code == 1
    assert "-ValueError: no acme today" in failed.stderr
    assert "+    | ValueError: no globex today" in failed.stderr
    assert invoke("transcript", "--update", path).exit_code == 0
    assert "    | ValueError: no globex today\n" in path.read_text()
    assert invoke("transcript", path).exit_code == 0


TRICKY = (
    "print('... reads like a continuation\\npinrepl > reads like a prompt\\n"
    "\\\\ starts with a backslash\\n\\n# follows a blank line\\n#\\n')"
)


def test_update_escapes_output_that_would_read_as_something_else(tmp_path):
    root = write_app(tmp_path / "app", {"greet.py": JOB})
    path = root / "tricky.transcript"
    path.write_text(f"pinrepl > {TRICKY}\nwrong\n\npinrepl > 1 + 1\n2\n")
    assert invoke("transcript", "--database", "app", "--update", path).exit_code == 0
    assert path.read_text() == (
        f"pinrepl > {TRICKY}\n"
        "\\... reads like a continuation\n"
        "\\pinrepl > reads like a prompt\n"
        "\\\\ starts with a backslash\n"
        "\n"
        "\\# follows a blank line\n"
        "#\n"
        "\n"
        "pinrepl > 1 + 1\n2\n"
    )
    replayed = invoke("transcript", "--database", "app", path)
    assert (replayed.exit_code, replayed.stdout) == (0, f"{path}: 2 of 2 examples passed\n")


def test_a_hash_line_after_a_blank_line_is_a_comment(tmp_path):
    root = write_app(tmp_path / "app", {"greet.py": JOB})
    path = root / "commented.transcript"
    path.write_text(
        "# Arithmetic.\n"
        "pinrepl > 1 + 1\n2\n\n"
        "# The next example\n# has a two-line comment.\n\n"
        "pinrepl > 2 + 2\n5\n"
    )
    assert invoke("transcript", "--database", "app", path).stdout.endswith(
        "1 of 2 examples passed\n")
    assert invoke("transcript", "--database", "app", "--update", path).exit_code == 0
    assert path.read_text() == (
        "# Arithmetic.\n"
        "pinrepl > 1 + 1\n2\n\n"
        "# The next example\n# has a two-line comment.\n\n"
        "pinrepl > 2 + 2\n4\n"
    )


def test_output_after_a_comment_is_an_error_naming_the_line():
    with pytest.raises(TranscriptError) as error:
        parse("pinrepl > 1\n1\n\n# a comment\nstray output\npinrepl > 2\n2\n")
    assert str(error.value).startswith("t.transcript:5: output after a comment")
