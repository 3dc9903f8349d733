"""The runs page's query parameters, read: `job`, `status`, `tenant`, `origin`, `since`
(a duration back from now, `90`, `30m`, `2h`, `7d`, or an ISO 8601 date and time, read in
the app's timezone without an offset) and `before` (the keyset page: the runs older than
that id). Anything else, or a value that is none of those, is `BadRunFilter`: the page's 400.

An empty value is no filter (a filter form sends its empty fields).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from .. import durations
from ..errors import BadRunFilter
from ..runs.control import MAX_ID, ORIGINS
from ..runs.status import STATUSES


@dataclass(frozen=True)
class RunsQuery:
    """The runs page's filters as given (`tenant` as typed: an id or a name), `since` also
    as the instant it means, and `before`."""

    job: str | None = None
    status: str | None = None
    tenant: str | None = None
    origin: str | None = None
    since: str | None = None
    before: int | None = None
    #: The instant `since` means (None: no `since`).
    since_at: datetime | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str], timezone: ZoneInfo, now: datetime) -> RunsQuery:
        """The filters of `params`; `BadRunFilter` for an unknown parameter or a bad value."""
        known = {f.name for f in fields(cls)} - {"since_at"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise BadRunFilter(f"unknown filter {unknown[0]!r}: the runs are filtered by job, "
                            "status, tenant, origin and since (and paged by before)")
        given = {name: value.strip() for name, value in params.items() if value.strip()}
        status, origin = given.get("status"), given.get("origin")
        if status is not None and status not in STATUSES:
            raise BadRunFilter(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
        if origin is not None and origin not in ORIGINS:
            raise BadRunFilter(f"unknown origin {origin!r}: one of {', '.join(ORIGINS)}")
        since = given.get("since")
        return cls(
            job=given.get("job"), status=status, tenant=given.get("tenant"), origin=origin,
            since=since, before=_id(given["before"], "before") if "before" in given else None,
            since_at=_instant(since, timezone, now) if since is not None else None,
        )

    @property
    def filtered(self) -> bool:
        return any((self.job, self.status, self.tenant, self.origin, self.since))

    def params(self, **changes: Any) -> str:
        """The query string of these filters, with `changes` (None drops one): '' or
        '?job=...'."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "since_at"}
        values.update(changes)
        kept = {name: value for name, value in values.items() if value is not None}
        return f"?{urlencode(kept)}" if kept else ""

    def without_page(self) -> RunsQuery:
        return replace(self, before=None)


def parse_id(text: str) -> int:
    """A run id from a page's address; `BadRunFilter` if it is not one."""
    return _id(text, "run id")


def _id(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise BadRunFilter(f"{what} {text!r} is not a run id (a whole number from 1)")
    return int(text)


def _instant(text: str, timezone: ZoneInfo, now: datetime) -> datetime:
    """`since` as an instant: `now` less a duration, or an ISO 8601 date and time."""
    with contextlib.suppress(ValueError):  # as the CLI's --since reads it
        return now - timedelta(seconds=durations.seconds(text))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRunFilter(
            f"since {text!r} is neither a duration (90, 30s, 15m, 2h, 7d, at most a year) nor "
            "an ISO 8601 date and time (2026-12-01 or 2026-12-01T08:00, in the app's "
            "timezone, or with an offset)") from None
    moment = moment.replace(tzinfo=timezone) if moment.tzinfo is None else moment
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # its offset takes it past year 1 or 9999
        raise BadRunFilter(f"since {text!r} is not a time a run can have been made (in UTC "
                           "it is before year 1 or after year 9999)") from None
