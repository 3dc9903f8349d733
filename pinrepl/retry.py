"""The retry policy of a job (SPEC 8): `Retry`, how long after a failed try the next one is
due, and which outcomes get another try.

A job says `retries = 3` (three more tries, the defaults below) or `retries =
pinrepl.Retry(...)`; `JobSpec.retry` is the policy or None. Only the runs the bots execute
retry; the caller of an in-process run sees the failure at once. Cheap to import: no
SQLAlchemy, nothing above `errors`.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable
from dataclasses import dataclass

from .errors import (
    BadJobArguments,
    JobDefinitionError,
    JobLoadError,
    JobTimeout,
    TenantViolation,
    UnknownBackgroundJob,
    UnknownTenant,
)

#: pinrepl's errors of the caller or of the job's definition: trying again changes nothing.
NEVER_RETRIED: tuple[type[BaseException], ...] = (
    BadJobArguments, UnknownTenant, TenantViolation, JobDefinitionError, JobLoadError,
    UnknownBackgroundJob,
)

#: The statuses that get another try whenever the job has retries left, whatever `on`
#: says: the run was stopped at its timeout, or its bot died (a job with retries must be
#: idempotent). The values of `runs.status.Status`, which sits above this module.
ALWAYS_RETRIED = frozenset({"timed_out", "abandoned"})


@dataclass(frozen=True)
class Retry:
    """Up to `attempts` more tries of a run that failed. Try n+1 is due
    `min(max_delay, delay * factor**(n-1))` seconds after try n failed, times a random
    factor between 0.5 and 1 when `jitter`. Exceptions of `on` and `JobTimeout` retry;
    pinrepl's errors of the caller or the definition (`BadJobArguments`, `UnknownTenant`,
    `TenantViolation`, `JobDefinitionError`, `JobLoadError`, `UnknownBackgroundJob`) never
    do. Invalid values raise `TypeError` or `ValueError` where the class is defined, which
    makes the job file a load error naming its line."""

    attempts: int = 3
    delay: float = 15
    factor: float = 2
    max_delay: float = 3600
    jitter: bool = True
    on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if isinstance(self.on, type):  # one class, for `on=OSError`
            object.__setattr__(self, "on", (self.on,))
        _check(isinstance(self.attempts, int) and not isinstance(self.attempts, bool)
               and self.attempts >= 1,
               "attempts", self.attempts, "a whole number of at least 1 (no retries: "
               "retries = 0)")
        _check(_is_number(self.delay) and self.delay >= 0, "delay", self.delay,
               "a number of seconds, 0 or more")
        _check(_is_number(self.factor) and self.factor >= 1, "factor", self.factor,
               "a number of at least 1")
        _check(_is_number(self.max_delay) and self.max_delay >= 0, "max_delay",
               self.max_delay, "a number of seconds, 0 or more")
        _check(isinstance(self.jitter, bool), "jitter", self.jitter, "True or False")
        if not (isinstance(self.on, tuple) and self.on and all(
                isinstance(c, type) and issubclass(c, BaseException) for c in self.on)):
            raise TypeError(f"Retry(on={self.on!r}): it must be an exception class or a "
                            "tuple of them")

    def delay_after(self, attempt: int, random: Callable[[], float] = _random.random
                    ) -> float:
        """Seconds from the failure of try `attempt` (1 for the first) until try
        `attempt + 1` is due; `random()` (in [0, 1)) draws the jitter."""
        try:
            base = min(self.max_delay, self.delay * self.factor ** (attempt - 1))
        except OverflowError:  # a factor to a huge power: past any max_delay
            base = self.max_delay
        return base * (0.5 + 0.5 * random()) if self.jitter else float(base)

    def retries(self, error: BaseException) -> bool:
        """Whether a try that raised `error` gets another one (if it has tries left)."""
        if isinstance(error, NEVER_RETRIED):
            return False
        return isinstance(error, (JobTimeout, *self.on))

    def has_try_after(self, attempt: int) -> bool:
        """Whether try `attempt` (1 for the first) may be followed by another."""
        return attempt <= self.attempts


def retry_delay(retry: Retry | None, attempt: int, status: str,
                error: BaseException | None = None,
                random: Callable[[], float] = _random.random) -> float | None:
    """Seconds until the next try of a run whose try `attempt` ended with `status`, or None
    when there is none: no policy, no try left, or an outcome that does not retry.
    `timed_out` and `abandoned` always retry; `failed` retries when `retry.retries(error)`
    (a failure known only by its status, `error` None, retries); other statuses never do."""
    if retry is None or not retry.has_try_after(attempt):
        return None
    if status in ALWAYS_RETRIED or (
            status == "failed" and (error is None or retry.retries(error))):
        return retry.delay_after(attempt, random)
    return None


def is_retries(value: object) -> bool:
    """Whether `value` may be a job's `retries`: None, a whole number, 0 or more, or a
    `Retry`."""
    return value is None or isinstance(value, Retry) or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def as_retry(value: int | Retry | None) -> Retry | None:
    """The policy a job's `retries` (checked by `is_retries`) means: an int n is
    `Retry(attempts=n)`, 0 or None none, a `Retry` itself."""
    if isinstance(value, int):
        return Retry(attempts=value) if value else None
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def _check(ok: bool, field: str, value: object, what: str) -> None:
    if not ok:
        raise ValueError(f"Retry({field}={value!r}): it must be {what}")
