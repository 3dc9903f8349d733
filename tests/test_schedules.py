"""Cron schedules: validation and next run times in the app's timezone."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from pinrepl import JobLoadError
from pinrepl.schedules import Schedule

PARIS = ZoneInfo("Europe/Paris")


def test_next_run_is_in_the_app_timezone():
    noon_utc = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    nxt = Schedule.parse("0 9 * * *").next_after(noon_utc, PARIS)
    assert nxt == datetime(2026, 11, 29, 9, 0, tzinfo=PARIS)
    assert nxt.utcoffset().total_seconds() == 3600


def test_six_fields_put_seconds_first():
    start = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    assert Schedule.parse("15 * * * * *").next_after(start, UTC) == start.replace(second=15)


def test_daylight_saving_change_is_followed():
    before = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    nxt = Schedule.parse("0 9 * * *").next_after(before, PARIS)
    assert (nxt.day, nxt.hour, nxt.utcoffset().total_seconds()) == (29, 9, 7200)


@pytest.mark.parametrize("cron", ["", "* * * *", "0 0 0 * * * 2030", "61 * * * *",
                                  "* * 32 * *", "abc * * * *"])
def test_invalid_cron_names_the_file_and_expression(cron):
    with pytest.raises(JobLoadError) as error:
        Schedule.parse(cron, where="jobs/x.py")
    assert str(error.value).startswith(f"jobs/x.py: invalid cron {cron!r}")
