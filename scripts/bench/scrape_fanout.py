"""Sequential lyricsgenius loop vs `lyricdist scrape`'s Ray fan-out, against the fake Genius service.

Every request to the fake takes `--latency` seconds, as real Genius requests take tens of milliseconds, so the
sequential loop pays latency x requests while the fan-out overlaps `--workers` artists, down to the floor set
by the shared rate limit (requests / rate). Run: python scripts/bench/scrape_fanout.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from fake_genius import FakeGenius, bulk_catalogue  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artists", type=int, default=21)
    ap.add_argument("--songs", type=int, default=20)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds per request at the fake service")
    ap.add_argument("--rate-limit", type=float, default=200.0, help="requests/s shared by the Ray workers")
    ap.add_argument("--workers", default="2,4,8", help="comma-separated worker counts for the fan-out")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import ray

    from lyricdist.genius.client import Genius, genius_roots
    from lyricdist.genius.driver import scrape

    catalogue = bulk_catalogue(args.artists, args.songs)
    names = [a.name for a in catalogue]
    with FakeGenius(catalogue, latency=args.latency) as fake, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(fake.env)
        rows = []

        # The original project's loop: one lyricsgenius call after another (no sleep between requests,
        # which only flatters it: lyricsgenius's default sleep_time adds 0.2 s per request).
        genius = Genius(fake.env["GENIUS_ACCESS_TOKEN"], genius_roots())
        start = time.perf_counter()
        songs = sum(len(genius.search_artist(n, max_songs=args.songs, sort="popularity").songs) for n in names)
        sequential = time.perf_counter() - start
        n_requests = fake.request_count()
        rows.append(("sequential loop", "1", sequential, songs))

        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        worker_counts = [int(w) for w in args.workers.split(",")]
        # start the Ray worker processes once, so each timed run measures scraping, not process start-up
        scrape(names[: max(worker_counts)], 1, Path(tmp) / "warm", workers=max(worker_counts),
               rate_limit=args.rate_limit, progress=False)
        for workers in worker_counts:
            fake.clear()
            start = time.perf_counter()
            report = scrape(names, args.songs, Path(tmp) / f"w{workers}", workers=workers,
                            rate_limit=args.rate_limit, progress=False)
            wall = time.perf_counter() - start
            assert report.exit_code == 0, [r.error for r in report.failed]
            rows.append(("ray fan-out", str(workers), wall, sum(r.songs for r in report.results)))
            # the fan-out makes one extra search per artist (it checks the name before fetching songs)
            n_requests = max(n_requests, fake.request_count())
        ray.shutdown()

    bound = n_requests / args.rate_limit
    print(f"{args.artists} artists x {args.songs} songs, {args.latency * 1000:.0f} ms per request, "
          f"~{n_requests} requests per run, rate limit {args.rate_limit:g} req/s -> floor {bound:.1f} s")
    print(f"{'mode':<16} {'workers':>7} {'wall s':>8} {'speedup':>8} {'songs':>6} {'floor s':>8}")
    for mode, workers, wall, songs in rows:
        floor = "-" if mode.startswith("sequential") else f"{bound:.1f}"
        print(f"{mode:<16} {workers:>7} {wall:>8.1f} {sequential / wall:>7.1f}x {songs:>6} {floor:>8}")


if __name__ == "__main__":
    main()
