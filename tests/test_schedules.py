"""Cron schedules (SPEC 7): slots in the schedule's timezone, by Debian cron's DST rule.

Slots are compared as UTC instants: Python compares two datetimes of one zone by wall
clock, so 01:30 EDT and 01:30 EST would look equal.
"""

import copy
import pickle
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pinrepl.errors import InvalidSchedule, JobLoadError, PinreplError
from pinrepl.schedules import Schedule, earliest, shown_time

NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # its clocks move by 30 minutes
SANTIAGO = ZoneInfo("America/Santiago")  # its clocks change at midnight

# (zone, local date): 25-hour days, then 23-hour days, in 2026.
AUTUMN = [(NEW_YORK, (2026, 11, 1)), (LONDON, (2026, 10, 25))]
SPRING = [(NEW_YORK, (2026, 3, 8)), (LONDON, (2026, 3, 29))]
DST_DAYS = AUTUMN + SPRING
HOURS = timedelta(hours=1)


def local_day(zone, ymd):
    """Local midnight to the next local midnight."""
    start = datetime(*ymd, tzinfo=zone)
    return start, datetime.combine(start.date() + timedelta(days=1), start.time(), zone)


def utc(slots):
    return [slot.astimezone(UTC) for slot in slots]


def slots_on(cron, zone, ymd):
    return Schedule(cron, zone).between(*local_day(zone, ymd))


def shown(slot):
    return slot.strftime("%H:%M:%S%z")


# -- Debian's rule for fixed-time schedules ---------------------------------------------


@pytest.mark.parametrize(("zone", "ymd"), AUTUMN, ids=["new-york", "london"])
def test_a_repeated_fixed_time_fires_once_at_its_first_occurrence(zone, ymd):
    slots = slots_on("30 1 * * *", zone, ymd)
    assert [shown(s) for s in slots] == ["01:30:00-0400" if zone is NEW_YORK else "01:30:00+0100"]


@pytest.mark.parametrize(
    ("cron", "zone", "ymd", "expected"),
    [
        ("30 2 * * *", NEW_YORK, (2026, 3, 8), ["03:00:00-0400"]),
        ("30 1 * * *", LONDON, (2026, 3, 29), ["02:00:00+0100"]),
        ("0,30 2 * * *", NEW_YORK, (2026, 3, 8), ["03:00:00-0400"]),
        ("0 2,3 * * *", NEW_YORK, (2026, 3, 8), ["03:00:00-0400"]),
        ("0,30 2,3 * * *", NEW_YORK, (2026, 3, 8), ["03:00:00-0400", "03:30:00-0400"]),
        ("0 30 2 * * *", NEW_YORK, (2026, 3, 8), ["03:00:00-0400"]),
    ],
)
def test_a_missing_fixed_time_fires_once_at_the_end_of_the_gap(cron, zone, ymd, expected):
    assert [shown(s) for s in slots_on(cron, zone, ymd)] == expected


def test_fixed_time_days_around_the_changes_are_plain():
    start = datetime(2026, 10, 30, tzinfo=NEW_YORK)
    slots = Schedule("30 2 * * *", NEW_YORK).between(start, start + timedelta(days=4))
    assert [s.isoformat() for s in slots] == [
        "2026-10-30T02:30:00-04:00",
        "2026-10-31T02:30:00-04:00",
        "2026-11-01T02:30:00-05:00",
        "2026-11-02T02:30:00-05:00",
    ]


@pytest.mark.parametrize(
    ("cron", "fixed"),
    [
        ("30 1 * * *", True),
        ("0-59 1 * * *", True),
        ("0 1-3 * * *", True),
        ("0 0 9 * * *", True),
        ("0 * * * *", False),
        ("*/30 * * * *", False),
        ("0 */2 * * *", False),
        ("* 1 * * *", False),
        ("* 30 1 * * *", False),
        ("*/5 30 1 * * *", False),
    ],
)
def test_fixed_time_is_no_seconds_minute_or_hour_field_starting_with_a_star(cron, fixed):
    assert Schedule(cron).fixed_time is fixed


def test_six_fields_with_fixed_seconds_follow_the_fixed_time_rule():
    assert len(slots_on("0 30 1 * * *", NEW_YORK, (2026, 11, 1))) == 1
    assert len(slots_on("* 30 1 * * *", NEW_YORK, (2026, 11, 1))) == 120


# -- other schedules follow real time ---------------------------------------------------


@pytest.mark.parametrize(("zone", "ymd"), DST_DAYS, ids=["ny-autumn", "london-autumn",
                                                         "ny-spring", "london-spring"])
@pytest.mark.parametrize(("cron", "long_day", "short_day"),
                         [("0 * * * *", 25, 23), ("*/30 * * * *", 50, 46)])
def test_interval_schedules_fire_at_every_matching_instant(zone, ymd, cron, long_day, short_day):
    slots = utc(slots_on(cron, zone, ymd))
    assert len(slots) == (long_day if (zone, ymd) in AUTUMN else short_day)
    step = timedelta(minutes=60 if cron.startswith("0 ") else 30)
    assert all(later - earlier == step for earlier, later in pairwise(slots))


def test_both_one_oclocks_of_the_repeated_hour_fire():
    slots = slots_on("0 1 * * *", NEW_YORK, (2026, 11, 1))  # fixed-time: once
    assert [shown(s) for s in slots] == ["01:00:00-0400"]
    slots = slots_on("0 * * * *", NEW_YORK, (2026, 11, 1))
    assert [shown(s) for s in slots[:4]] == [
        "00:00:00-0400", "01:00:00-0400", "01:00:00-0500", "02:00:00-0500"
    ]


def test_an_interval_schedule_skips_wall_clock_times_that_do_not_exist():
    assert slots_on("*/30 2 * * *", NEW_YORK, (2026, 3, 8)) == []
    assert len(slots_on("*/30 2 * * *", NEW_YORK, (2026, 3, 9))) == 2


def test_thirty_minute_changes_lord_howe():
    autumn = (2026, 4, 5)  # 02:00 +11 becomes 01:30 +10:30
    assert [shown(s) for s in slots_on("45 1 * * *", LORD_HOWE, autumn)] == ["01:45:00+1100"]
    assert [shown(s) for s in slots_on("*/15 1 * * *", LORD_HOWE, autumn)] == [
        "01:00:00+1100", "01:15:00+1100", "01:30:00+1100", "01:45:00+1100",
        "01:30:00+1030", "01:45:00+1030",
    ]
    assert len(slots_on("* 2 * * *", LORD_HOWE, autumn)) == 60
    spring = (2026, 10, 4)  # 02:00 +10:30 becomes 02:30 +11
    assert [shown(s) for s in slots_on("15 2 * * *", LORD_HOWE, spring)] == ["02:30:00+1100"]
    assert len(slots_on("* 2 * * *", LORD_HOWE, spring)) == 30


def test_slots_are_strictly_increasing_aware_and_in_the_schedules_timezone():
    for zone, ymd in DST_DAYS:
        for cron in ("*/10 * * * *", "0,30 1-3 * * *", "*/20 * * * * *"):
            slots = slots_on(cron, zone, ymd)
            assert all(s.tzinfo is zone for s in slots)
            instants = utc(slots)
            assert instants == sorted(set(instants))


def test_a_day_of_a_per_second_schedule():
    slots = Schedule("* * * * * *", NEW_YORK).between(*local_day(NEW_YORK, (2026, 11, 1)))
    assert len(slots) == 25 * 3600
    instants = utc(slots)
    assert instants[0] == datetime(2026, 11, 1, 4, tzinfo=UTC)
    assert instants[-1] == datetime(2026, 11, 2, 4, 59, 59, tzinfo=UTC)


# -- seconds, and between / next_after / latest_at_or_before ----------------------------


def test_per_second_schedule():
    start = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    every = Schedule("* * * * * *")
    assert utc(every.between(start, start + timedelta(seconds=10))) == [
        start + timedelta(seconds=n) for n in range(10)
    ]
    assert every.next_after(start) == start + timedelta(seconds=1)
    assert every.next_after(start + timedelta(microseconds=1)) == start + timedelta(seconds=1)
    assert every.latest_at_or_before(start) == start
    assert every.between(start, start) == []
    assert len(every.between(start + timedelta(microseconds=1), start + timedelta(seconds=2))) == 1


def test_six_fields_put_seconds_first():
    start = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert Schedule("15 * * * * *").next_after(start) == start.replace(second=15)


def test_next_slot_is_in_the_schedules_timezone():
    noon_utc = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    nxt = Schedule("0 9 * * *", "Europe/Paris").next_after(noon_utc)
    assert nxt.tzinfo == ZoneInfo("Europe/Paris")
    assert nxt.isoformat() == "2026-11-29T09:00:00+01:00"


@pytest.mark.parametrize(("zone", "ymd"), DST_DAYS)
@pytest.mark.parametrize("cron", ["30 1 * * *", "30 2 * * *", "0,30 1-3 * * *", "0 * * * *",
                                  "*/20 * * * *", "*/15 1-2 * * *", "0 */20 1-2 * * *"])
def test_next_after_and_latest_at_or_before_walk_the_same_slots_as_between(zone, ymd, cron):
    start, end = local_day(zone, ymd)
    schedule = Schedule(cron, zone)
    expected = utc(schedule.between(start, end))
    walked, moment = [], start - timedelta(seconds=1)
    while (moment := schedule.next_after(moment)) < end:
        walked.append(moment.astimezone(UTC))
    assert walked == expected
    for earlier, later in zip([None, *expected], expected, strict=False):
        assert schedule.latest_at_or_before(later).astimezone(UTC) == later
        before = schedule.latest_at_or_before(later - timedelta(microseconds=1))
        if earlier is not None:
            assert before.astimezone(UTC) == earlier


# cron: a span that always holds a slot before and after any moment
CRONS = {"30 1 * * *": 2, "30 2 * * *": 2, "0,30 2 * * *": 2, "*/7 * * * *": 2,
         "0 * * * *": 2, "15 1-3 * * *": 2, "*/15 1-2 * * *": 2, "*/20 1 * * * *": 2,
         "0 2 * * 0": 8, "0 0 1 * *": 32}


@settings(max_examples=150, deadline=None)
@given(
    cron=st.sampled_from(sorted(CRONS)),
    place=st.sampled_from([*DST_DAYS, (LORD_HOWE, (2026, 4, 5)), (LORD_HOWE, (2026, 10, 4))]),
    offset=st.integers(min_value=-6 * 3600 * 10**6, max_value=30 * 3600 * 10**6),
)
def test_next_and_latest_agree_with_between_from_any_moment(cron, place, offset):
    zone, ymd = place
    schedule = Schedule(cron, zone)
    moment = local_day(zone, ymd)[0] + timedelta(microseconds=offset)
    span = timedelta(days=CRONS[cron])
    after = [t for t in utc(schedule.between(moment, moment + span)) if t > moment]
    assert schedule.next_after(moment).astimezone(UTC) == after[0]
    before = utc(schedule.between(moment - span, moment + timedelta(microseconds=1)))
    assert schedule.latest_at_or_before(moment).astimezone(UTC) == before[-1]


def test_latest_at_or_before_looks_back_far_enough():
    leap_day = Schedule("0 12 29 2 *", NEW_YORK)
    latest = leap_day.latest_at_or_before(datetime(2027, 1, 1, tzinfo=UTC))
    assert latest.isoformat() == "2024-02-29T12:00:00-05:00"


def test_moments_must_be_aware():
    with pytest.raises(ValueError, match="timezone-aware"):
        Schedule("* * * * *").next_after(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        Schedule("* * * * *").between(datetime(2026, 1, 1), datetime(2026, 1, 2, tzinfo=UTC))


# -- against cronsim, which implements Debian's rule ------------------------------------

CRONSIM_CRONS = [
    "30 1 * * *", "30 2 * * *", "0 2 * * *", "0,30 2 * * *", "0 2,3 * * *", "15 1-3 * * *",
    "30 1,2 * * *", "59 1 * * *", "0 0 * * *", "45 23 * * *", "0 3 * * *", "5 1 * * 0",
    "10,50 0-3 * * *", "0-59/20 1-2 * * *", "0 * * * *", "*/30 * * * *", "*/7 * * * *",
    "0 */2 * * *", "* 1 * * *", "* 2 * * *", "*/15 1-2 * * *",
]


@pytest.mark.parametrize(("zone", "ymd"), DST_DAYS)
@pytest.mark.parametrize("cron", CRONSIM_CRONS)
def test_same_slots_as_cronsim(cron, zone, ymd):
    cronsim = pytest.importorskip("cronsim")
    start = datetime(*ymd, tzinfo=zone) - 12 * HOURS
    end = start + 48 * HOURS
    expected = []
    for slot in cronsim.CronSim(cron, start - timedelta(seconds=1)):  # yields times after it
        if slot >= end:
            break
        expected.append(slot.astimezone(UTC))
    assert utc(Schedule(cron, zone).between(start, end)) == expected


# -- aliases ----------------------------------------------------------------------------

ALIASES = {
    "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


@pytest.mark.parametrize(("alias", "fields"), ALIASES.items())
def test_an_alias_fires_as_its_five_fields_do(alias, fields):
    start = datetime(2026, 1, 1, tzinfo=NEW_YORK)
    end = datetime(2028, 1, 1, tzinfo=NEW_YORK)
    schedule = Schedule(alias, NEW_YORK)
    assert schedule.cron == alias  # shown as written
    assert schedule.fixed_time is Schedule(fields).fixed_time
    if alias == "@hourly":  # two years of hours is slow to list: two DST days are enough
        for ymd in (2026, 3, 8), (2026, 11, 1):
            assert utc(slots_on(alias, NEW_YORK, ymd)) == utc(slots_on(fields, NEW_YORK, ymd))
    else:
        same = Schedule(fields, NEW_YORK)
        assert utc(schedule.between(start, end)) == utc(same.between(start, end))
    moment = datetime(2026, 11, 1, 1, 15, tzinfo=NEW_YORK)
    assert schedule.next_after(moment) == Schedule(fields, NEW_YORK).next_after(moment)


def test_daily_is_fixed_time_and_hourly_follows_real_time():
    # Midnight is never repeated or skipped in New York; in Santiago the clocks skip from
    # 00:00 to 01:00 in September, and @daily, fixed-time, fires once after the gap.
    assert [shown(s) for s in slots_on("@daily", SANTIAGO, (2026, 9, 6))] == ["01:00:00-0300"]
    assert len(slots_on("@hourly", NEW_YORK, (2026, 11, 1))) == 25
    assert len(slots_on("@hourly", NEW_YORK, (2026, 3, 8))) == 23


@pytest.mark.parametrize(("zone", "ymd"), [*DST_DAYS, (SANTIAGO, (2026, 4, 5)),
                                           (SANTIAGO, (2026, 9, 6))])
@pytest.mark.parametrize("alias", ["@hourly", "@daily", "@midnight", "@weekly", "@monthly"])
def test_aliases_give_the_same_slots_as_cronsim_on_their_five_fields(alias, zone, ymd):
    cronsim = pytest.importorskip("cronsim")
    start = datetime(*ymd, tzinfo=zone) - 12 * HOURS
    end = start + 24 * 40 * HOURS
    expected = []
    for slot in cronsim.CronSim(ALIASES[alias], start - timedelta(seconds=1)):
        if slot >= end:
            break
        expected.append(slot.astimezone(UTC))
    assert utc(Schedule(alias, zone).between(start, end)) == expected


@pytest.mark.parametrize("cron", ["@reboot", "@daily 5", "@Daily", "@"])
def test_an_unknown_alias_is_invalid_and_lists_the_known_ones(cron):
    with pytest.raises(InvalidSchedule, match=r": unknown alias \(known: @yearly, "):
        Schedule(cron)


async def test_a_job_may_schedule_an_alias(make_app):
    from pinrepl import App

    root = make_app({"nightly.py": """
        from pinrepl import BackgroundJob

        class Nightly(BackgroundJob):
            def meta(self):
                self.schedule("@daily", timezone="Europe/London")

            async def run(self):
                pass
    """})
    async with App.open(root) as app:
        registry = app.jobs
    assert registry.errors == []
    (schedule,) = registry.get("nightly").schedules
    assert schedule == Schedule("@daily", LONDON)


# -- invalid schedules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("", "expected 5 fields, or 6 with seconds first (got 0)"),
        ("* * * *", "expected 5 fields, or 6 with seconds first (got 4)"),
        ("0 0 0 * * * 2030", "expected 5 fields, or 6 with seconds first (got 7)"),
        ("61 * * * *", "bad minute field '61'"),
        ("* * 32 * *", "bad day-of-month field '32'"),
        ("abc * * * *", "bad minute field 'abc'"),
        ("0 0 * 13 *", "bad month field '13'"),
        ("60 * * * * *", "bad second field '60'"),
        ("*/0 * * * *", "bad minute field '*/0'"),
        ("0 0 31 2 *", "never fires"),
        ("0 0 30,31 2 *", "never fires"),
        ("0 0 0 31 4,6,9,11 *", "never fires"),
    ],
)
def test_an_invalid_cron_is_a_one_line_error_naming_it(cron, problem):
    with pytest.raises(InvalidSchedule) as error:
        Schedule(cron)
    message = str(error.value)
    assert message.startswith(f"invalid cron {cron!r}: {problem}")
    assert "\n" not in message
    assert isinstance(error.value, PinreplError) and isinstance(error.value, ValueError)


@pytest.mark.parametrize("cron", [None, 5, ["0", "*", "*", "*", "*"], b"0 * * * *"])
def test_a_cron_that_is_not_a_string_is_invalid(cron):
    with pytest.raises(InvalidSchedule, match=r"^invalid cron .*: must be a string, not "):
        Schedule(cron)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "utc", "", "America", "../etc/passwd"])
def test_an_unknown_timezone_is_invalid_and_the_error_blames_the_timezone(zone):
    with pytest.raises(InvalidSchedule) as error:
        Schedule("0 * * * *", zone)
    message = str(error.value)
    assert message.startswith(f"unknown timezone {zone!r} for schedule '0 * * * *'")
    assert "invalid cron" not in message and "\n" not in message


def test_an_unknown_timezone_suggests_close_names_whatever_their_case():
    with pytest.raises(InvalidSchedule, match=r"\(did you mean: Europe/London[,?]"):
        Schedule("0 * * * *", "europe/london")


def test_a_timezone_that_is_not_a_name_is_invalid():
    with pytest.raises(InvalidSchedule, match=r"^the timezone of schedule '0 \* \* \* \*' "
                                              r"must be a zone name, not 5$"):
        Schedule("0 * * * *", 5)  # type: ignore[arg-type]


def test_leap_days_and_rare_weekdays_are_valid():
    assert Schedule("0 0 29 2 *").next_after(datetime(2026, 1, 1, tzinfo=UTC)).year == 2028
    assert Schedule("0 0 * 2 1#5").next_after(datetime(2026, 1, 1, tzinfo=UTC)).year == 2044


@pytest.mark.parametrize("cron", ["61 * * * *", "0 0 0 * * * 2030", "0 0 31 2 *", 7])
def test_parse_names_the_file(cron):
    with pytest.raises(JobLoadError) as error:
        Schedule.parse(cron, where="jobs/x.py")
    assert str(error.value).startswith(f"jobs/x.py: invalid cron {cron!r}: ")
    assert error.value.path == "jobs/x.py"


def test_parse_unknown_timezone_names_the_file():
    with pytest.raises(JobLoadError, match=r"^jobs/x.py: .*unknown timezone 'Nowhere'"):
        Schedule.parse("0 * * * *", "jobs/x.py", timezone="Nowhere")


def test_parse_keeps_timezone_and_arguments():
    parsed = Schedule.parse("0 * * * *", "jobs/x.py", "Europe/London", (1,), {"a": [2]})
    assert parsed == Schedule("0 * * * *", LONDON, args=(1,), kwargs={"a": [2]})


# -- the object -------------------------------------------------------------------------


def test_equal_and_hashed_by_cron_timezone_and_arguments():
    one = Schedule("0 * * * *", "Europe/London", args=(1, [2]), kwargs={"to": ["a", "b"]})
    same = Schedule("0 * * * *", LONDON, args=(1, [2]), kwargs={"to": ["a", "b"]})
    assert one == same and hash(one) == hash(same) and len({one, same}) == 1
    others = [
        Schedule("0 * * * *", LONDON, args=(2, [2]), kwargs={"to": ["a", "b"]}),
        Schedule("0 * * * *", LONDON, args=(1, [2]), kwargs={"to": ["a"]}),
        Schedule("0 * * * *", LONDON, args=(1, [2])),
        Schedule("0 * * * *", "UTC", args=(1, [2]), kwargs={"to": ["a", "b"]}),
        Schedule("5 * * * *", LONDON, args=(1, [2]), kwargs={"to": ["a", "b"]}),
    ]
    assert all(one != other for other in others)
    assert len({one, *others}) == 6
    assert Schedule("0 * * * *") != "0 * * * *"


def test_immutable():
    schedule = Schedule("0 * * * *", args=(1,), kwargs={"a": 1})
    with pytest.raises(AttributeError):
        schedule.cron = "5 * * * *"
    schedule.kwargs["a"] = 2
    assert schedule.kwargs == {"a": 1}
    assert copy.deepcopy(schedule) == schedule
    assert pickle.loads(pickle.dumps(schedule)) == schedule


def test_attributes_and_repr():
    schedule = Schedule("0 * * * *", timezone="Europe/London")
    assert (schedule.cron, schedule.timezone) == ("0 * * * *", LONDON)
    assert (schedule.args, schedule.kwargs) == ((), {})
    assert repr(schedule) == "Schedule('0 * * * *', timezone='Europe/London')"
    assert repr(Schedule("0 * * * *", args=(1,), kwargs={"a": 2})) == (
        "Schedule('0 * * * *', timezone='UTC', args=(1,), kwargs={'a': 2})"
    )


def test_earliest_compares_instants_not_wall_clocks():
    first = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK)  # EDT
    later = datetime(2026, 11, 1, 1, 10, fold=1, tzinfo=NEW_YORK)  # EST, 40 minutes on
    assert earliest([later, first]) is first
    assert shown_time(later) == "2026-11-01 01:10:00 EST"
    assert earliest([]) is None
