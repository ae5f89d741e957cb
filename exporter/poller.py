"""The poll loop: interval, backoff with jitter, Retry-After, stale-after.

Each poll attempt hands over a `PollResult`: the tenant's group block (the
per-group families, rendered and deflated chunk by chunk from the body by
`pipeline.GroupPipeline`, which redoes only what changed) and the health
figures and lifecycle counters, as data. Putting the tenant's share of the
exposition together is the publisher's job. Scrapes never call the API: they
read what the last result rendered to.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from .api import ApiClient, ApiError, classify
from .exposition import DEFAULT_MAX_LABEL_LENGTH, GroupBlock, Health, empty_group_block
from .payload import PayloadError

if TYPE_CHECKING:  # the poller process's: the serving process never loads msgspec
    from .pipeline import GroupPipeline, Processed

log = structlog.get_logger("exporter.poller")

# Retry-After above this is not waited for in full: the next poll at the latest
# comes one interval later, so a bogus header cannot silence the exporter.
RETRY_AFTER_CAP_INTERVALS = 1.0


@dataclass(frozen=True)
class PollTiming:
    """Where a successful poll spent its time; `time.monotonic()` instants, which are
    comparable across the processes of one machine."""

    groups: int
    fetch_s: float
    started: float
    received: float
    """When the whole response had arrived."""

    def log_published(self, tenant: str) -> None:
        """One debug line once the new snapshot is served (the benchmark reads it)."""
        now = time.monotonic()
        log.debug(
            "poll_completed",
            tenant=tenant,
            groups=self.groups,
            fetch_s=round(self.fetch_s, 6),
            processing_s=round(now - self.received, 6),
            duration_s=round(now - self.started, 6),
        )


@dataclass(frozen=True)
class PollResult:
    """What one poll attempt hands over."""

    block: GroupBlock | None
    """The groups to expose; None after a failed poll: the last ones still hold (the
    poller does not keep them), until stale-after drops them with an empty block."""
    health: Health
    timing: PollTiming | None = None
    """Where a successful poll spent its time; None after a failed one."""


class Publish(Protocol):
    def __call__(self, result: PollResult) -> None:
        """Hand a poll's result to whoever renders and serves it."""


@dataclass(frozen=True)
class RetryPolicy:
    interval: float
    first_backoff: float = 5.0

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Delay after the n-th consecutive failed poll: doubling, capped, jittered."""
        base = min(self.first_backoff, self.interval) * 2.0 ** max(0, failures - 1)
        delay = min(base, self.interval)
        return delay * rng.uniform(0.5, 1.0)

    def delay_after(self, failure: ApiError, failures: int, rng: random.Random) -> float:
        if failure.labels == ("401", "430"):
            # The key is not allowed this API: retrying sooner cannot help.
            return self.interval
        delay = self.backoff(failures, rng)
        if failure.retry_after is not None:
            delay = max(delay, min(failure.retry_after, self.interval * RETRY_AFTER_CAP_INTERVALS))
        return delay


_FIXES = {
    ("401", "430"): "enable the target-group API for this API user in Webex Campaign",
    ("401", "498"): "the key or token is invalid or expired: rotate the key file or check it",
}


def fetch_groups(
    client: ApiClient,
    pipeline: GroupPipeline,
    timed: Callable[[float], bool] = lambda _now: True,
    clock: Callable[[], float] = time.time,
) -> tuple[Processed, float]:
    """One request and its processing, and the request's seconds; a failure of either is
    an ApiError, counted once. `timed(now)`: whether import durations are observed."""
    response = client.fetch()
    now = clock()
    try:
        return pipeline.process(response.body, now, timed(now)), response.fetch_seconds
    except PayloadError as exc:
        failure = classify(exc)
        client.count_failure(failure)
        raise failure from None


class Poller:
    """Polls, builds the samples, and publishes them. One instance, one thread."""

    def __init__(
        self,
        client: ApiClient,
        tenant: str,
        timezone: str,
        interval: float,
        stale_after: float,
        publish: Publish,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        max_label_length: int = DEFAULT_MAX_LABEL_LENGTH,
    ) -> None:
        self._client = client
        self._tenant = tenant
        self._stale_after = stale_after
        self._publish = publish
        self._clock = clock
        self._rng = rng or random.Random()
        self.policy = RetryPolicy(interval)
        from .pipeline import GroupPipeline

        self._pipeline = GroupPipeline(tenant, timezone, max_label_length)
        self._groups = 0
        """Groups the last result left exposed (what stale-after drops)."""
        self._counts: dict[str, int] = {}
        self._last_success: float | None = None
        self._up = False
        self._failures_in_row = 0
        self._last_failure: tuple[str, str] | None = None
        self._invalid = 0
        self._invalid_logged: int | None = None
        self._stop = threading.Event()

    def poll_once(self) -> float:
        """Poll, publish, and return the seconds to wait before the next poll."""
        started = self._clock()
        begun = time.monotonic()
        try:
            processed, fetch_seconds = fetch_groups(
                self._client, self._pipeline, self._timed, self._clock
            )
        except ApiError as failure:
            self._on_failure(failure, started, time.monotonic() - begun)
            return self.policy.delay_after(failure, self._failures_in_row, self._rng)
        self._on_success(processed, fetch_seconds, begun)
        return self.policy.interval

    def _timed(self, now: float) -> bool:
        """After failed polls beyond stale-after, a finished import cannot be timed."""
        return self._failures_in_row == 0 or not self._is_stale(now)

    def _on_success(self, processed: Processed, fetch_seconds: float, begun: float) -> None:
        # Processing counts from the whole body received: parsing is part of it.
        processing_from = begun + fetch_seconds
        groups = processed.block.groups
        self._groups = groups
        self._counts = processed.counts
        self._invalid = processed.invalid
        if processed.invalid != self._invalid_logged:
            self._invalid_logged = processed.invalid
            if processed.invalid:
                log.warning(
                    "invalid_records",
                    tenant=self._tenant,
                    count=processed.invalid,
                    examples=list(processed.problems[:5]),
                )
        if not self._up:
            log.info(
                "api_up",
                tenant=self._tenant,
                groups=groups,
                failed_polls=self._failures_in_row,
            )
        self._up = True
        self._failures_in_row = 0
        self._last_failure = None
        self._last_success = self._clock()
        timing = PollTiming(groups, fetch_seconds, begun, processing_from)
        self._emit(processed.block, duration=time.monotonic() - begun, timing=timing)

    def _on_failure(self, failure: ApiError, started: float, duration: float) -> None:
        self._failures_in_row += 1
        if self._up or self._last_failure != failure.labels:
            status, code = failure.labels
            log.error(
                "api_down" if self._up or self._last_failure is None else "api_failure_changed",
                tenant=self._tenant,
                status=status,
                code=code,
                detail=failure.detail,
                fix=_FIXES.get(failure.labels),
            )
        self._up = False
        self._last_failure = failure.labels
        dropped: GroupBlock | None = None
        if self._is_stale(started) and self._groups:
            log.warning(
                "stale_series_dropped",
                tenant=self._tenant,
                groups=self._groups,
                stale_after_s=self._stale_after,
            )
            self._groups = 0
            self._counts = {}
            dropped = empty_group_block()
        self._emit(dropped, duration=duration)

    def _is_stale(self, now: float) -> bool:
        return self._last_success is None or now - self._last_success > self._stale_after

    def _emit(
        self,
        block: GroupBlock | None,
        duration: float,
        timing: PollTiming | None = None,
    ) -> None:
        requests, failures = self._client.stats.read()
        health = Health(
            tenant=self._tenant,
            up=self._up,
            last_success=self._last_success,
            poll_duration=duration,
            requests=requests,
            failures=failures,
            invalid=self._invalid,
            group_counts=self._counts,
            lifecycle=self._pipeline.tracker.lifecycle,
        )
        self._publish(PollResult(block, health, timing))

    def run(self, after_poll: Callable[[], object] = lambda: None) -> None:
        """Poll now, then on schedule, until stop(). Polls never overlap.

        The schedule runs start to start, so a slow poll does not drift the interval.
        """
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                delay = self.poll_once()
            except Exception:
                # A bug, not an API failure: keep serving the last snapshot and poll again.
                log.exception("poll_crashed", tenant=self._tenant)
                delay = self.policy.interval
            after_poll()
            self._stop.wait(max(0.0, started + delay - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
