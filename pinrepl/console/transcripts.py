"""Transcripts: REPL sessions written down, replayed through the REPL's evaluator.

A transcript holds prompt lines (`pinrepl > code`, continued by `... code` lines), each
followed by the output it must print. `...` in expected output matches any text (doctest's
ELLIPSIS); an expected traceback is matched on its exception line(s), like doctest.
Each replay gets a fresh console and, by default, a sandbox: the database is left as found.
By default transcripts replay against a test database made for the run
(`test_database`): the app's tables and its demo data, whatever the developer's holds.
"""

from __future__ import annotations

import ast
import codeop
import contextlib
import dataclasses
import difflib
import doctest
import io
import logging
import re
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..app import App
from ..db.schema import create_scratch_database, drop_scratch_database
from ..errors import DatabaseUnavailable, TranscriptError
from ..settings import Settings
from .evaluator import Evaluator
from .repl import session

PROMPT = re.compile(r"pinrepl(?: \[[^\]]*\])? >(?: (?P<code>.*))?")
CONTINUATION = re.compile(r"\.\.\.(?: (?P<code>.*))?")
TRACEBACK = "Traceback (most recent call last):"
_checker = doctest.OutputChecker()


@dataclass
class Example:
    line: int  # 1-based line of its prompt
    source: str
    expected: str
    prompt_lines: list[str] = field(default_factory=list)


@dataclass
class Transcript:
    path: Path
    examples: list[Example]
    preamble: list[str]

    @classmethod
    def read(cls, path: Path) -> Transcript:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TranscriptError(f"{path}: cannot read it as a UTF-8 text file ({exc})") from None
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, path: Path) -> Transcript:
        examples: list[Example] = []
        preamble: list[str] = []
        current: Example | None = None
        in_code = False
        for number, line in enumerate(text.splitlines(), start=1):
            prompt = PROMPT.fullmatch(line)
            if prompt:
                current = Example(number, prompt["code"] or "", "", [line])
                examples.append(current)
                in_code = True
                continue
            if current is None:
                if line.strip() and not line.startswith("#"):
                    raise TranscriptError(
                        f"{path}:{number}: text before the first prompt line "
                        "(start a prompt with 'pinrepl > '; comments start with '#')"
                    )
                preamble.append(line)
                continue
            if in_code and line.startswith("...") and (
                line != "..." or _open_block(current.source)
            ):
                continuation = CONTINUATION.fullmatch(line)
                if continuation is None:
                    raise TranscriptError(
                        f"{path}:{number}: malformed continuation line {line!r} "
                        "(write '... ' and then the code)"
                    )
                current.source += "\n" + (continuation["code"] or "")
                current.prompt_lines.append(line)
                continue
            if in_code:
                in_code = False
                _check_complete(current, path)
            current.expected += line + "\n"
        if current is not None and in_code:
            _check_complete(current, path)
        if not examples:
            raise TranscriptError(f"{path}: no prompt lines (lines starting with 'pinrepl > ')")
        for example in examples:  # blank lines between examples are not output
            example.expected = example.expected.rstrip("\n") + "\n" if example.expected.strip() \
                else ""
        return cls(path, examples, preamble)


def _open_block(source: str) -> bool:
    """Is a bare `...` after `source` the blank line that ends a block (rather than an
    ellipsis at the start of the expected output)? Yes after an incomplete or compound
    statement."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return True
    compound = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try,
                ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Match)
    return bool(tree.body) and isinstance(tree.body[-1], compound)


def _check_complete(example: Example, path: Path) -> None:
    compiler = codeop.Compile()
    compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    try:
        complete = codeop.CommandCompiler()
        complete.compiler = compiler
        incomplete = complete(example.source + "\n", str(path), "exec") is None
    except (SyntaxError, ValueError, OverflowError):
        return  # a syntax error is output the transcript may expect
    if incomplete:
        raise TranscriptError(
            f"{path}:{example.line}: the code at this prompt is incomplete; continue it on "
            "lines starting with '... '"
        )


@dataclass
class Outcome:
    example: Example
    actual: str

    @property
    def passed(self) -> bool:
        return matches(self.example.expected, self.actual)

    def difference(self, path: Path) -> str:
        diff = difflib.unified_diff(
            self.example.expected.splitlines(), self.actual.splitlines(),
            "expected", "actual", lineterm="",
        )
        return f"{path}:{self.example.line}: {self.example.prompt_lines[0]}\n" + "\n".join(diff)


def matches(expected: str, actual: str) -> bool:
    flags = doctest.ELLIPSIS
    want_out, want_exc = _split_traceback(expected)
    got_out, got_exc = _split_traceback(actual)
    if (want_exc is None) != (got_exc is None):
        return False
    if not _checker.check_output(want_out, got_out, flags):
        return False
    return want_exc is None or _checker.check_output(want_exc, got_exc or "", flags)


def _split_traceback(text: str) -> tuple[str, str | None]:
    """(output before a traceback, the traceback's exception lines or None)."""
    head, found, tail = text.partition(TRACEBACK + "\n")
    if not found:
        return text, None
    exception = [
        line for line in tail.splitlines()
        if line and not line[0].isspace() and line != "..."
    ]
    return head, "\n".join(exception) + "\n"


async def replay(transcript: Transcript, app: App, sandbox: bool = True) -> list[Outcome]:
    """Run every example of `transcript` in a fresh console; its outcomes, in order.
    With `sandbox`, the replay's writes are rolled back at its end."""
    if sandbox and await _reachable(app):
        async with app.sandbox():
            return await _replay(transcript, app)
    # No database: nothing to protect, and a database call will say so itself.
    return await _replay(transcript, app)


async def _reachable(app: App) -> bool:
    try:
        await app.engine.check()
    except DatabaseUnavailable:
        return False
    return True


async def _replay(transcript: Transcript, app: App) -> list[Outcome]:
    outcomes = []
    async with session(app) as console:
        console.ready()
        evaluator = Evaluator(console.namespace, str(transcript.path))
        for example in transcript.examples:
            captured = io.StringIO()
            with _capture(captured):
                try:
                    await evaluator.run(example.source, lambda v: print(repr(v)))
                except Exception as exc:
                    print(TRACEBACK, "  ...", sep="\n")
                    print("".join(traceback.format_exception_only(exc)), end="")
            outcomes.append(Outcome(example, captured.getvalue()))
    return outcomes


@contextlib.contextmanager
def _capture(output: io.StringIO) -> Iterator[None]:
    """Print and log into `output` (logged lines are output, as in the REPL); the root
    logger is left as it was found."""
    handler = logging.StreamHandler(output)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO))
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def updated(transcript: Transcript, outcomes: list[Outcome]) -> str:
    """The transcript's text with each failing example's expected output replaced."""
    blocks = []
    for outcome in outcomes:
        output = outcome.example.expected if outcome.passed else outcome.actual
        blocks.append("\n".join([*outcome.example.prompt_lines, *output.rstrip().splitlines()]))
    preamble = "".join(line + "\n" for line in transcript.preamble)
    return preamble + "\n\n".join(blocks) + "\n"


async def create_test_database(settings: Settings) -> Settings:
    """`settings` on a new test database beside the app's (see `create_scratch_database`)
    holding the app's tables and demo data (`init-database --demo`, with the models
    file's `seed_demo`). `drop_test_database` removes it."""
    url = await create_scratch_database(settings.database_url, settings.root)
    test = dataclasses.replace(settings, database_url=url)
    try:
        async with App(test) as app:
            await app.init_database(demo=True, echo=lambda _line: None)
    except BaseException:
        await drop_scratch_database(url)
        raise
    return test


async def drop_test_database(settings: Settings) -> None:
    await drop_scratch_database(settings.database_url)
