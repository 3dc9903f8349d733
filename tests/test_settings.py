"""App folders and their [tool.pinrepl] settings."""

from __future__ import annotations

import pytest

from pinrepl import ConfigError, Settings
from pinrepl.settings import find_app


def test_defaults(tmp_path):
    settings = Settings.load(tmp_path, environ={})
    assert settings.jobs_dir == tmp_path / "jobs"
    assert settings.models_path is None
    assert settings.database_url == "sqlite+aiosqlite:///pinrepl.db"
    assert settings.timezone.key == "UTC"
    assert settings.multi_tenant is False


def test_pyproject_settings_and_the_environment(tmp_path):
    (tmp_path / "tasks.py").write_text("")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pinrepl]\njobs = "work"\nmodels = "tasks.py"\ntimezone = "Asia/Tokyo"\n'
        'multi_tenant = true\ndatabase_url = "sqlite:///from-settings.db"\n'
    )
    settings = Settings.load(tmp_path, environ={})
    assert settings.jobs_dir == tmp_path / "work"
    assert settings.models_path == tmp_path / "tasks.py"
    assert settings.timezone.key == "Asia/Tokyo"
    assert settings.multi_tenant is True
    assert settings.database_url == "sqlite:///from-settings.db"
    env = {"PINREPL_DATABASE_URL": "sqlite:///from-env.db", "PINREPL_APP": "/nonexistent"}
    assert Settings.load(tmp_path, environ=env).database_url == "sqlite:///from-env.db"


def test_app_folder_from_the_environment(tmp_path):
    assert Settings.load(environ={"PINREPL_APP": str(tmp_path)}).root == tmp_path


def test_the_app_is_the_nearest_folder_with_jobs_or_a_pinrepl_table(tmp_path, monkeypatch):
    app = tmp_path / "app"
    (app / "jobs" / "reports").mkdir(parents=True)
    (app / "docs" / "deep").mkdir(parents=True)
    (app / "docs" / "pyproject.toml").write_text("[tool.black]\n")  # not a pinrepl table
    other = tmp_path / "other"
    (other / "src").mkdir(parents=True)
    (other / "pyproject.toml").write_text('[tool.pinrepl]\njobs = "tasks"\n')
    plain = tmp_path / "plain"
    plain.mkdir()
    for start, root in [(app / "jobs" / "reports", app), (app / "docs" / "deep", app),
                        (app, app), (other / "src", other), (plain, plain)]:
        assert find_app(start) == root
        monkeypatch.chdir(start)
        assert Settings.load(environ={}).root == root
    assert Settings.load(environ={"PINREPL_APP": str(app)}).root == app  # the variable wins


@pytest.mark.parametrize(("toml", "message"), [
    ('[tool.pinrepl]\ntimezone = "Mars/Olympus"\n', "unknown timezone 'Mars/Olympus'"),
    ('[tool.pinrepl]\nmulti_tenant = "yes"\n', "multi_tenant must be true or false"),
    ('[tool.pinrepl]\njobz = "x"\n', "unknown [tool.pinrepl] setting(s): jobz"),
    ('[tool.pinrepl]\nmodels = "nope.py"\n', "models file"),
    ('[tool.pinrepl]\nkeep_runs_days = 0\n', "keep_runs_days must be a whole number"),
    ('[tool.pinrepl]\njobs = ""\n', "jobs must be a non-empty string"),
    ("[tool.pinrepl\n", "pyproject.toml"),
    ("tool = 5\n", "pyproject.toml: 'tool' must be a table"),
    ("[tool]\npinrepl = 5\n", "pyproject.toml: [tool.pinrepl] must be a table"),
    ("[tool.pinrepl]\njobs = '\udce9t\udce9'\n", "pyproject.toml: not UTF-8 text"),
])
def test_bad_settings_are_one_clear_error(tmp_path, toml, message):
    (tmp_path / "pyproject.toml").write_bytes(toml.encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigError) as error:
        Settings.load(tmp_path, environ={})
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_app_folder(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "nope", environ={})


async def test_two_models_files_defining_one_table_in_one_process(tmp_path):
    from pinrepl import App

    source = ("from sqlalchemy.orm import Mapped, mapped_column\nfrom pinrepl import Model\n\n"
              "class Thing(Model):\n    __tablename__ = 'clash_things'\n"
              "    id: Mapped[int] = mapped_column(primary_key=True)\n")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "models.py").write_text(source)
    async with App.open(tmp_path / "a") as app:
        models = [m.__tablename__ for m in app.models]
    assert models[0] == "tenants" and models[-1] == "clash_things"  # built-in tables first
    with pytest.raises(ConfigError) as error:
        async with App.open(tmp_path / "b") as app:
            app.models  # noqa: B018
    assert str(error.value) == (
        f"{tmp_path / 'b' / 'models.py'}:4: InvalidRequestError: Table 'clash_things' is "
        "already defined for this MetaData instance (pinrepl.Model holds one set of tables "
        f"per process, and {tmp_path / 'a' / 'models.py'} loaded here defines it too)"
    )
