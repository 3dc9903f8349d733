"""Transcripts: REPL sessions written down, replayed through the REPL's evaluator.

A transcript holds prompt lines (`pinrepl > code`, continued by `... code` lines), each
followed by the output it must print. `...` in expected output matches any text (doctest's
ELLIPSIS); an expected traceback is matched on its exception line(s), like doctest, those
of an exception group's members included. A `#` line after a blank line starts a comment
that runs to the next prompt. An output line that starts with a backslash is read without
it: `--update` (`updated`) writes one before output that would read as a prompt, a
continuation or a comment, so that every file it writes replays.
Each replay gets a fresh console and, by default, a sandbox: the database is left as found.
What the code prints is its output, and so is what the app logs at INFO and up (pinrepl's
loggers and those named after the app's modules), caught without touching the root logger.
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
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..app import App
from ..db.schema import create_scratch_database, drop_scratch_database
from ..errors import DatabaseUnavailable, TranscriptError
from ..jobs import modules_in
from ..settings import Settings
from . import LOG_FORMAT
from .evaluator import Evaluator, format_exception
from .repl import session

PROMPT = re.compile(r"pinrepl(?: \[[^\]]*\])? >(?: (?P<code>.*))?")
CONTINUATION = re.compile(r"\.\.\.(?: (?P<code>.*))?")
TRACEBACK = re.compile(r"(?: *[+|] )?(?:Exception Group )?Traceback \(most recent call last\):")
_MARGIN = re.compile(r" *\| ?")  # an exception group's left margin
_CHAINED = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
ESCAPE = "\\"
_checker = doctest.OutputChecker()


@dataclass
class Example:
    line: int  # 1-based line of its prompt
    source: str
    expected: str
    prompt_lines: list[str] = field(default_factory=list)
    #: The expected output as the file has it (escapes included), and the blank lines and
    #: comments after it: `updated` writes both back as they were.
    output_lines: list[str] = field(default_factory=list)
    trailer: list[str] = field(default_factory=list)


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
        body: list[tuple[int, str]] = []  # the current example's lines after its code
        current: Example | None = None
        in_code = False
        for number, line in enumerate(text.splitlines(), start=1):
            prompt = PROMPT.fullmatch(line)
            if prompt:
                if current is not None:
                    _finish(current, body, in_code, path)
                current = Example(number, prompt["code"] or "", "", [line])
                examples.append(current)
                body, in_code = [], True
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
            body.append((number, line))
        if current is not None:
            _finish(current, body, in_code, path)
        if not examples:
            raise TranscriptError(f"{path}: no prompt lines (lines starting with 'pinrepl > ')")
        return cls(path, examples, preamble)


def _finish(example: Example, body: list[tuple[int, str]], in_code: bool, path: Path) -> None:
    """Split the lines after `example`'s code into its expected output and the blank
    lines and comments that follow it."""
    if in_code:
        _check_complete(example, path)
    end = len(body)
    for index, (_number, line) in enumerate(body):
        if line.startswith("#") and index > 0 and not body[index - 1][1].strip():
            end = index  # a comment, up to the next prompt
            for later, text in body[index:]:
                if text.strip() and not text.startswith("#"):
                    raise TranscriptError(
                        f"{path}:{later}: output after a comment (a '#' line after a blank "
                        "line is a comment up to the next prompt; write '\\#' for output "
                        "that starts with '#')"
                    )
            break
    while end > 0 and not body[end - 1][1].strip():
        end -= 1  # blank lines between examples are not output
    example.output_lines = [line for _number, line in body[:end]]
    example.trailer = [line for _number, line in body[end:]]
    example.expected = "".join(
        (line[1:] if line.startswith(ESCAPE) else line) + "\n" for line in example.output_lines
    )


def escaped(output: str) -> list[str]:
    """The lines of `output` as a transcript holds them: a backslash before each line
    that would otherwise read as a prompt, a continuation or a comment (or that starts
    with a backslash itself)."""
    lines = _trimmed(output).splitlines()
    return [
        ESCAPE + line if (
            line.startswith(ESCAPE)
            or PROMPT.fullmatch(line)
            or (index == 0 and line.startswith("..."))
            or (line.startswith("#") and index > 0 and not lines[index - 1].strip())
        ) else line
        for index, line in enumerate(lines)
    ]


def _trimmed(output: str) -> str:
    """`output` without trailing blank lines (they separate examples in a file)."""
    lines = output.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return "".join(line + "\n" for line in lines)


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
    """(output before a traceback, the traceback's exception lines or None). The
    exception lines are those of the last exception of a chain, with the messages and
    notes of an exception group's members, without the group's margins."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if TRACEBACK.fullmatch(line.rstrip())),
                 None)
    if start is None:
        return text, None
    exception: list[str] = []
    for line in lines[start:]:
        margin = _MARGIN.match(line)
        content = line[margin.end():] if margin else line
        content = content.rstrip("\n")
        if content in _CHAINED and not margin:
            exception.clear()
        elif content and not content[0].isspace() and content != "..." \
                and not TRACEBACK.fullmatch(content):
            exception.append(content + "\n")
    return "".join(lines[:start]), "".join(exception)


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
        # Named as the prompt names its code: under the file's own name, Python would show
        # a syntax error with the line of that number in the transcript, prompt and all.
        evaluator = Evaluator(console.namespace)
        for example in transcript.examples:
            captured = io.StringIO()
            with _capture(captured, _app_loggers(app)):
                try:
                    await evaluator.run(example.source, lambda v: print(repr(v)))
                except Exception as exc:
                    print(format_exception(exc, elide_frames=True), end="")
            outcomes.append(Outcome(example, _trimmed(captured.getvalue())))
    return outcomes


@contextlib.contextmanager
def _capture(output: io.StringIO, loggers: Iterable[str]) -> Iterator[None]:
    """Print into `output`, and log there what `loggers` log at INFO and up (logged lines
    are output, as in the REPL). The root logger is not touched: its handlers (pytest's,
    the app's) still get the records, and other libraries' logging is left to them."""
    handler = logging.StreamHandler(output)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(logging.INFO)
    with contextlib.ExitStack() as stack:
        for name in sorted(loggers):
            stack.enter_context(_logging_to(handler, logging.getLogger(name)))
        stack.enter_context(contextlib.redirect_stdout(output))
        stack.enter_context(contextlib.redirect_stderr(output))
        yield


@contextlib.contextmanager
def _logging_to(handler: logging.Handler, logger: logging.Logger) -> Iterator[None]:
    """`logger` (and its children) log to `handler` too, from INFO up (its level lowered
    to INFO meanwhile if it is higher); its handlers and level are restored afterwards."""
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _app_loggers(app: App) -> set[str]:
    """What a job logs, by logger: pinrepl's and those named after the app's modules, by
    the top-level name of each module or package in the app folder (`jobs.maintenance`,
    `models`, `services.mail`) and of each loaded module from the jobs folder or the
    models file, under the name it was loaded by (`logging.getLogger(__name__)` in a job
    file). Not the app folder's every module: a virtualenv inside it holds libraries."""
    settings = app.settings
    names = {"pinrepl"}
    names.update(path.stem for path in settings.root.iterdir()
                 if path.stem.isidentifier() and (path.suffix == ".py" or path.is_dir()))
    loaded = modules_in(settings.jobs_dir)
    if settings.models_path is not None:
        models = str(settings.models_path)
        loaded += [name for name, module in list(sys.modules.items())
                   if getattr(module, "__file__", None) == models]
    names.update(name.partition(".")[0] for name in loaded)
    return names


def updated(transcript: Transcript, outcomes: list[Outcome]) -> str:
    """The transcript's text with each failing example's expected output replaced by what
    it printed (escaped: see `escaped`); everything else is kept as it was."""
    lines = list(transcript.preamble)
    for outcome in outcomes:
        example = outcome.example
        output = example.output_lines if outcome.passed else escaped(outcome.actual)
        lines += [*example.prompt_lines, *output, *example.trailer]
    return "".join(line + "\n" for line in lines)


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


#: Folders `found_in` does not enter: pytest's default `norecursedirs` (and, as pytest,
#: virtual environments), so that `pinrepl transcript FOLDER` replays what pytest collects.
NOT_SEARCHED = ("*.egg", ".*", "_darcs", "build", "CVS", "dist", "node_modules", "venv",
                "{arch}")


def found_in(folder: Path) -> list[Path]:
    """The `test_*.transcript` files below `folder`, in the order pytest collects them."""
    found: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            if not any(path.match(pattern) for pattern in NOT_SEARCHED) and \
                    not (path / "pyvenv.cfg").is_file():
                found += found_in(path)
        elif path.name.startswith("test_") and path.suffix == ".transcript":
            found.append(path)
    return found
