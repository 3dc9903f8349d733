"""App folders and their [tool.pinrepl] settings."""

from __future__ import annotations

import pytest

from pinrepl import ConfigError, Settings


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


@pytest.mark.parametrize(("toml", "message"), [
    ('[tool.pinrepl]\ntimezone = "Mars/Olympus"\n', "unknown timezone 'Mars/Olympus'"),
    ('[tool.pinrepl]\nmulti_tenant = "yes"\n', "multi_tenant must be true or false"),
    ('[tool.pinrepl]\njobz = "x"\n', "unknown [tool.pinrepl] setting(s): jobz"),
    ('[tool.pinrepl]\nmodels = "nope.py"\n', "models file"),
    ("[tool.pinrepl\n", "pyproject.toml"),
])
def test_bad_settings_are_one_clear_error(tmp_path, toml, message):
    (tmp_path / "pyproject.toml").write_text(toml)
    with pytest.raises(ConfigError) as error:
        Settings.load(tmp_path, environ={})
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_app_folder(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "nope", environ={})


def test_two_models_files_defining_one_table_in_one_process(tmp_path):
    from pinrepl import App

    source = ("from sqlalchemy.orm import Mapped, mapped_column\nfrom pinrepl import Model\n\n"
              "class Thing(Model):\n    __tablename__ = 'clash_things'\n"
              "    id: Mapped[int] = mapped_column(primary_key=True)\n")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "models.py").write_text(source)
    assert [m.__tablename__ for m in App.open(tmp_path / "a").models] == ["tenants",
                                                                          "clash_things"]
    with pytest.raises(ConfigError) as error:
        App.open(tmp_path / "b").models  # noqa: B018
    assert str(error.value) == (
        f"{tmp_path / 'b' / 'models.py'}:4: InvalidRequestError: Table 'clash_things' is "
        "already defined for this MetaData instance (pinrepl.Model holds one set of tables "
        f"per process, and {tmp_path / 'a' / 'models.py'} loaded here defines it too)"
    )
