"""Settings: which folder is the app, and what its `[tool.pinrepl]` table says (SPEC 1).

Reading settings is cheap (no heavy imports) and has no side effects: it is the first thing
every command does, and a bad setting is a `ConfigError` before anything else happens.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

KNOWN_SETTINGS = frozenset(
    {"jobs", "models", "database_url", "timezone", "multi_tenant", "keep_runs_days"}
)
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///pinrepl.db"


@dataclass(frozen=True)
class Settings:
    """What an app folder says about itself."""

    root: Path
    jobs_dir: Path
    models_path: Path | None
    database_url: str
    timezone: ZoneInfo
    multi_tenant: bool
    keep_runs_days: int = 30

    @classmethod
    def load(
        cls, root: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings of the app in `root`, else `PINREPL_APP`, else the app found from the
        current directory (`find_app`)."""
        environ = os.environ if environ is None else environ
        given = root or environ.get("PINREPL_APP")
        folder = Path(given).resolve() if given else find_app(Path.cwd())
        if not folder.is_dir():
            raise ConfigError(f"app folder {folder} does not exist")
        table = read_table(folder / "pyproject.toml")
        unknown = set(table) - KNOWN_SETTINGS
        if unknown:
            raise ConfigError(
                f"{folder / 'pyproject.toml'}: unknown [tool.pinrepl] setting(s): "
                f"{', '.join(sorted(unknown))}"
            )
        return cls(
            root=folder,
            jobs_dir=folder / _string(table, "jobs", "jobs"),
            models_path=_models_path(folder, table),
            database_url=str(
                environ.get("PINREPL_DATABASE_URL")
                or _string(table, "database_url", DEFAULT_DATABASE_URL)
            ),
            timezone=_timezone(_string(table, "timezone", "UTC")),
            multi_tenant=_bool(table, "multi_tenant", False),
            keep_runs_days=_positive_int(table, "keep_runs_days", 30),
        )


def find_app(start: Path) -> Path:
    """The nearest folder at or above `start` with a `jobs` folder or a `[tool.pinrepl]`
    table, as git and pytest find their roots; else `start` itself."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / "jobs").is_dir() or _has_pinrepl_table(folder / "pyproject.toml"):
            return folder
    return start


def _has_pinrepl_table(pyproject: Path) -> bool:
    if not pyproject.is_file():
        return False
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    tool = data.get("tool")
    return isinstance(tool, dict) and "pinrepl" in tool


def read_table(pyproject: Path) -> dict[str, Any]:
    """The `[tool.pinrepl]` table of `pyproject` ({} without one)."""
    if not pyproject.is_file():
        return {}
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{pyproject}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{pyproject}: {exc}") from None
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"{pyproject}: 'tool' must be a table")
    table = tool.get("pinrepl", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: [tool.pinrepl] must be a table")
    return table


def _models_path(root: Path, table: Mapping[str, Any]) -> Path | None:
    if "models" not in table:
        return root / "models.py" if (root / "models.py").is_file() else None
    path = root / _string(table, "models")
    if not path.is_file():
        raise ConfigError(f"models file {path} does not exist")
    return path


def _timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown timezone {name!r} in [tool.pinrepl]") from None


def _string(table: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"[tool.pinrepl] {key} must be a non-empty string")
    return value


def _bool(table: Mapping[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"[tool.pinrepl] {key} must be true or false")
    return value


def _positive_int(table: Mapping[str, Any], key: str, default: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"[tool.pinrepl] {key} must be a whole number of at least 1")
    return value
