"""One request-rate limit for every task of every scrape job on a Ray cluster.

Genius's budget is per client, not per task, so the limit lives in one named, detached Ray actor per Genius API
root: every request books the next free slot (1/rate apart) and sleeps until it. Detached, because the job that
created it may end while another job still uses it; each job joins it for the length of its scrape, and the
actor exits when the last job leaves (or when the others' drivers are found dead), so nothing outlives the scrapes.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import ray

LIMITER_NAME = "lyricdist-genius-rate-limiter"
LIMITER_NAMESPACE = "lyricdist"  # fixed, so that every job on the cluster finds the same limiter
KEPT_BOOKINGS = 100_000  # the latest slots kept for `bookings` (an audit of the pacing; 800 KB at most)


@ray.remote(num_cpus=0)
class RateLimiter:
    """Books request slots 1/rate apart on `clock` (injectable, so that tests count slots instead of timing).

    Progress counts are kept per run (the key each driver joins with), so concurrent scrapes that share the budget
    still each report their own requests and songs.
    """

    def __init__(self, rate: float, clock: Callable[[], float] | None = None):
        self.clock = clock or time.monotonic
        self.interval = 1.0 / rate
        self.next_free = self.clock()
        self.runs: dict[str, dict] = {}
        self.drivers: dict[str, list] = {}  # run -> [an object its driver owns]: lost once that driver is gone
        self.booked: deque[float] = deque(maxlen=KEPT_BOOKINGS)

    def join(self, run: str, rate: float, driver_object: list) -> None:
        """A job starts using the limiter; the latest job's rate applies to everyone (booked slots stay booked)."""
        self.interval = 1.0 / rate
        self.drivers[run] = driver_object
        self._run(run)

    def leave(self, run: str) -> None:
        """A job is done; the last one to leave ends the actor (and frees its name)."""
        self.drivers.pop(run, None)
        self.runs.pop(run, None)
        for other, driver_object in list(self.drivers.items()):
            if not _alive(driver_object[0]):  # that job's driver died without leaving
                self.drivers.pop(other)
                self.runs.pop(other, None)
        if not self.drivers:
            ray.actor.exit_actor()

    def _run(self, run: str) -> dict:
        return self.runs.setdefault(run, {"requests": 0, "retries": 0, "songs": 0, "started": self.clock()})

    def acquire(self, run: str = "", retry: bool = False) -> float:
        """Seconds the caller must wait before sending its request."""
        now = self.clock()
        slot = max(now, self.next_free)
        self.next_free = slot + self.interval
        self.booked.append(slot)
        counts = self._run(run)
        counts["requests"] += 1
        counts["retries"] += int(retry)
        return slot - now

    def pause(self, seconds: float) -> None:
        """Genius said 429: nobody sends for a while."""
        self.next_free = max(self.next_free, self.clock() + seconds)

    def song_fetched(self, run: str = "") -> None:
        self._run(run)["songs"] += 1

    def stats(self, run: str = "") -> dict:
        counts = dict(self._run(run))
        return {**counts, "seconds": self.clock() - counts.pop("started")}

    def bookings(self) -> list[float]:
        """The latest booked slots, on the limiter's clock, in booking order."""
        return list(self.booked)


def _alive(driver_object) -> bool:
    try:
        ray.get(driver_object, timeout=10)
    except ray.exceptions.GetTimeoutError:  # its driver is busy, not gone
        return True
    except ray.exceptions.RayError:  # OwnerDiedError: the driver that put it has exited
        return False
    return True


@dataclass(frozen=True)
class LimiterLease:
    """A scrape's membership of the shared limiter: what its tasks call to pace their requests."""

    actor: Any
    run: str

    def acquire(self, retry: bool = False) -> float:
        return ray.get(self.actor.acquire.remote(self.run, retry=retry))

    def pause(self, seconds: float) -> None:
        self.actor.pause.remote(seconds)

    def song_fetched(self) -> None:
        self.actor.song_fetched.remote(self.run)

    def stats(self) -> dict:
        return ray.get(self.actor.stats.remote(self.run))


def limiter_name(roots: dict[str, str]) -> str:
    """One limiter per Genius API root, since the budget is Genius's."""
    return f"{LIMITER_NAME}-{hashlib.sha1(roots['API_ROOT'].encode()).hexdigest()[:10]}"


@contextmanager
def shared_limiter(rate: float, roots: dict[str, str], clock: Callable[[], float] | None = None,
                   ) -> Iterator[LimiterLease]:
    """Join the cluster's limiter for the Genius API at `roots` (created on first use, with `clock`) for the
    length of the block; the last job to leave ends it."""
    run = uuid.uuid4().hex
    driver_object = [ray.put(run)]  # owned by this driver: once it is gone, so is this object
    for attempt in range(5):
        actor = RateLimiter.options(
            name=limiter_name(roots), namespace=LIMITER_NAMESPACE, lifetime="detached", get_if_exists=True
        ).remote(rate, clock)
        try:
            ray.get(actor.join.remote(run, rate, driver_object))
            break
        except ray.exceptions.RayActorError:  # it was ending as we found it (its last job just left): start anew
            time.sleep(0.1 * (attempt + 1))
    else:
        raise RuntimeError("could not join the shared Genius rate limiter")
    try:
        yield LimiterLease(actor, run)
    finally:
        try:
            ray.get(actor.leave.remote(run))
        except ray.exceptions.RayActorError:  # the actor ended: this was its last job
            pass
