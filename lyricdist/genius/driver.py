"""The scrape driver: one Ray task per artist, each finished artist saved at once, then the dataset written.

Each finished artist is saved under OUT/raw/ as soon as its task returns, so a crash loses only the artists in
flight and a re-run skips finished ones (`refresh` redoes them) and retries failed ones.
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

import ray
from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from ..errors import LyricdistError
from ..fileio import atomic_write_json, recover_dir
from ..refs import DEFAULT_VISIBILITY, Visibility
from .artists import ArtistSpec, load_artists_file, parse_artist_entry, unique_artists
from .cleaning import clean_songs
from .client import RECORD_VERSION, TOKEN_ENV, FetchSettings, Secret, fetch_artist, genius_roots, lyrics_failure
from .dataset import push_to_hub as push_dataset
from .dataset import write_dataset
from .limiter import shared_limiter
from .report import ArtistResult, ScrapeReport


def load_record(path: Path, spec: ArtistSpec, max_songs: int) -> dict | None:
    """A finished artist's record if it can be reused for this request (not one that `lyrics_failure` fails,
    as older versions saved for blocked song pages)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = (
        record.get("version") == RECORD_VERSION
        and record.get("status") == "done"
        and record.get("name") == spec.name
        and record.get("genius_id") == spec.genius_id
        and int(record.get("max_songs", 0)) >= max_songs
    )
    if not ok:
        return None
    record["songs"] = record["songs"][:max_songs]
    return None if lyrics_failure(record["songs"]) else record


def start_ray() -> bool:
    """Connect to RAY_ADDRESS's cluster or start a local one; True when this call started the connection."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:  # a cluster (set by `ray job submit` for a job's driver, or by the user)
        ray.init(address=address, logging_level="WARNING")
    else:  # a private local instance on loopback: never a stale or someone else's `ray start` cluster
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, logging_level="WARNING")
    return True


def run_tasks(pending: Sequence[ArtistSpec], settings: FetchSettings, workers: int,
              on_record: Callable[[ArtistSpec, dict], None], bar) -> None:
    """Keep `workers` artist tasks in flight; hand each finished record to `on_record` at once."""
    task = ray.remote(fetch_artist).options(num_cpus=0, max_retries=2, scheduling_strategy="SPREAD")
    queue = deque(pending)
    in_flight: dict = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < workers:
                spec = queue.popleft()
                in_flight[task.remote(spec, settings)] = spec
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                spec = in_flight.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayError as e:  # the worker or its node died (after Ray's own retries)
                    record = {"name": spec.name, "genius_id": spec.genius_id, "status": "failed",
                              "error": f"Ray task failed: {type(e).__name__}"}
                on_record(spec, record)
                bar.update(1)
            stats = settings.limiter.stats()
            bar.set_postfix(songs=stats["songs"], req_s=f"{stats['requests'] / max(stats['seconds'], 1e-9):.1f}",
                            retries=stats["retries"], refresh=False)
            bar.update(0)  # redraws at most every `mininterval` seconds
    finally:
        for ref in in_flight:
            ray.cancel(ref, force=True)


def scrape(
    artists: Sequence[str | ArtistSpec | dict],
    max_songs: PositiveInt,
    out: str | os.PathLike,
    *,
    artists_file: str | None = None,
    refresh: bool = False,
    workers: PositiveInt = 8,
    rate_limit: PositiveFloat = 5.0,
    retries: NonNegativeInt = 5,
    backoff: NonNegativeFloat = 1.0,
    timeout: PositiveFloat = 10.0,
    push_to_hub: str | None = None,
    visibility: Visibility = DEFAULT_VISIBILITY,
    parquet: bool = False,
    progress: bool = True,
) -> ScrapeReport:
    """Scrape Genius lyrics (one Ray task per artist) into a Hugging Face dataset directory. Needs
    GENIUS_ACCESS_TOKEN. Uses the Ray cluster already initialised, else RAY_ADDRESS's, else a local one.

    Returns the per-artist report; its exit_code is 3 when any artist failed (the others are still saved;
    a re-run retries only the failed ones).

    Args:
        artists: artist names (quote names with spaces)
        max_songs: most popular songs per artist
        out: dataset directory (created; finished artists are reused)
        artists_file: YAML list of names or {name: NAME, id: GENIUS_ID}, e.g. configs/artists/original-21.yaml
        refresh: scrape artists again even if already done
        workers: artists scraped at once
        rate_limit: requests per second, shared by all workers and by other scrapes on the cluster
        retries: retries per request on 429, 5xx, timeouts and song pages without lyrics
        backoff: seconds of exponential backoff (doubling per retry, jittered); a 429 pauses everyone this long
        timeout: seconds before a request times out
        push_to_hub: also push the dataset and its card to this Hub dataset repo (USER/NAME)
        visibility: visibility of a repo created on the Hub (an existing repo keeps its own)
        parquet: also write parquet/train.parquet
        progress: show a progress bar
    """
    from ..options import check_types

    check_types(scrape, locals())
    specs = [a if isinstance(a, ArtistSpec) else parse_artist_entry(a, "artists") for a in artists]
    if artists_file:
        specs += load_artists_file(artists_file)
    specs = unique_artists(specs)
    if not specs:
        raise LyricdistError("no artists given; name them (e.g. `lyricdist scrape ABBA Queen`) or pass --artists_file")
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise LyricdistError(
            f"{TOKEN_ENV} is not set; create a client access token at https://genius.com/api-clients and export it"
        )
    roots = genius_roots()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LyricdistError(f"--out {str(out)!r} is a file; give a directory for the dataset")
    ours = (out / "raw").is_dir() or (out / "dataset_dict.json").is_file()
    if out.is_dir() and any(out.iterdir()) and not ours:  # the final swap replaces the whole directory
        raise LyricdistError(f"--out {str(out)!r} holds other files; give a new or empty directory for the dataset")
    recover_dir(out)
    raw_dir = out / "raw"

    records: dict[ArtistSpec, dict] = {}
    pending: list[ArtistSpec] = []
    for spec in specs:
        cached = None if refresh else load_record(raw_dir / spec.record_filename(), spec, max_songs)
        if cached is not None:
            cached["status"] = "cached"
            records[spec] = cached
        else:
            pending.append(spec)

    def on_record(spec: ArtistSpec, record: dict) -> None:
        records[spec] = record
        if record["status"] == "done":
            path = raw_dir / spec.record_filename()
            assert path.resolve().parent == raw_dir.resolve()
            atomic_write_json(path, record)

    if pending:
        from tqdm.auto import tqdm

        started_ray = start_ray()
        try:
            with shared_limiter(rate_limit, roots) as limiter, tqdm(
                total=len(specs), initial=len(specs) - len(pending), unit="artist", desc="artists",
                disable=not progress, file=sys.stderr, mininterval=1.0, dynamic_ncols=True,
            ) as bar:
                settings = FetchSettings(max_songs, Secret(token), roots, limiter, retries, backoff, timeout)
                run_tasks(pending, settings, workers, on_record, bar)
        finally:
            if started_ray:
                ray.shutdown()

    report = ScrapeReport(out=out)
    rows: list[dict] = []
    for spec in specs:
        record = records[spec]
        if record["status"] == "failed":
            report.results.append(ArtistResult(spec.label, "failed", error=record.get("error", "")))
            continue
        artist_rows, stats = clean_songs(record["artist"], record["artist_id"], record["songs"])
        rows.extend(artist_rows)
        report.results.append(
            ArtistResult(spec.label, record["status"], record["artist"], stats.kept, stats.chars, stats.empty,
                         stats.duplicates)
        )
    if len(report.failed) < len(report.results):
        write_dataset(out, rows, report, parquet=parquet, progress=progress)
        report.dataset_written = True
        if push_to_hub:
            push_dataset(out, push_to_hub, visibility=visibility)
    return report
