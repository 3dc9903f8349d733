"""The app's models file: imported once per process, under its own module name (`models` for
`models.py`) with the app folder importable (the app makes it so), so that `from models
import User` in a job file gives the very class the database uses. Its tables cannot be
defined twice in one process, so the module stays for the process (a later app of the same
file gets it back), and `changed_since_loaded` tells when the file is newer than what the
process runs.

A models file that fails to import is a `ConfigError` naming the file and line; it is
reported each time it is needed, without growing tracebacks, and jobs that need no models
stay usable.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType

from sqlalchemy.exc import InvalidRequestError

from .db.models import Model
from .errors import ConfigError
from .runs.tables import BUILT_IN

_loaded: dict[Path, ModuleType] = {}
_loaded_mtimes: dict[Path, int] = {}
_failures: dict[tuple[Path, int], str] = {}  # by file and its mtime: a fix is seen


def load_models(path: Path | None, root: Path) -> tuple[ModuleType | None, list[type[Model]]]:
    """The models module and its tables: the built-in ones, then every mapped `Model`
    subclass the file defines or imports."""
    module = _import(path, root) if path is not None else None
    found: list[type[Model]] = list(BUILT_IN)
    for obj in vars(module).values() if module else ():
        if (
            isinstance(obj, type) and issubclass(obj, Model) and obj not in found
            and "__table__" in vars(obj)
        ):
            found.append(obj)
    return module, found


def _import(path: Path, root: Path) -> ModuleType:
    path = path.resolve()
    key = (path, path.stat().st_mtime_ns)
    if key in _failures:
        raise ConfigError(_failures[key])
    if path in _loaded:
        return _loaded[path]
    name = _module_name(path, root)
    loaded = sys.modules.get(name)
    if loaded is not None:
        if _file_of(loaded) == path:  # imported already, e.g. by a job file
            _loaded[path], _loaded_mtimes[path] = loaded, key[1]
            return loaded
        # Another app's models file holds the name in this process (several apps in one
        # test run): this one loads under a name of its own.
        name = f"pinrepl_models_{len(sys.modules)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        _failures[key] = _describe(exc, path)
        raise ConfigError(_failures[key]) from None
    _loaded[path], _loaded_mtimes[path] = module, key[1]
    return module


def changed_since_loaded(path: Path) -> bool:
    """Whether the models file at `path` changed (or went) since this process loaded it."""
    path = path.resolve()
    if path not in _loaded_mtimes:
        return False
    try:
        return path.stat().st_mtime_ns != _loaded_mtimes[path]
    except OSError:
        return True


def _file_of(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def _module_name(path: Path, root: Path) -> str:
    """`models.py` -> `models`, `app/models.py` -> `app.models` (relative to the app)."""
    try:
        parts = path.relative_to(root.resolve()).with_suffix("").parts
    except ValueError:
        parts = (path.stem,)
    if all(part.isidentifier() for part in parts):
        return ".".join(parts)
    raise ConfigError(f"models file {path}: its path is not an importable module name")


def _describe(exc: Exception, path: Path) -> str:
    """One line: the file, the line and what went wrong."""
    if isinstance(exc, SyntaxError):
        return f"{path}:{exc.lineno}: SyntaxError: {exc.msg}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    where = f"{path}:{frames[-1].lineno}" if frames else str(path)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, InvalidRequestError):
        message = message.split(".  ")[0]
        other = _other_definition(message, path)
        if other is not None:
            message += (
                f" (pinrepl.Model holds one set of tables per process, and {other} "
                "loaded here defines it too)"
            )
    return f"{where}: {type(exc).__name__}: {message}" if message else \
        f"{where}: {type(exc).__name__}"


def _other_definition(message: str, path: Path) -> str | None:
    """The file of another loaded module whose model defines the table `message` names."""
    named = re.match(r"Table '([^']+)' is already defined", message)
    if named is None:
        return None
    for model in _all_subclasses(Model):
        if "__table__" in vars(model) and vars(model)["__table__"].name == named[1]:
            module = sys.modules.get(model.__module__)
            file = _file_of(module) if module is not None else None
            if file is not None and file != path:
                return str(file)
    return None


def _all_subclasses(cls: type[Model]) -> list[type[Model]]:
    found: list[type[Model]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found
