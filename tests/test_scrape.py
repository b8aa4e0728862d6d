"""`lyricdist scrape`: cleaning rules on real-looking Genius text, and end-to-end runs against a fake Genius
service over real HTTP with a local Ray cluster (one per module)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import re

import pytest

from fake_hf import FakeHub
from conftest import CONFIGS, run_cli
from fake_genius import FAKE_TOKEN, FakeGenius
from lyricdist.errors import LyricdistError
from lyricdist.genius.artists import ArtistSpec, load_artists_file
from lyricdist.genius.cleaning import clean_genius_lyrics, clean_songs, normalise_title
from lyricdist.genius.client import Genius, genius_roots, is_song_page
from lyricdist.genius.driver import scrape
from lyricdist.genius.report import EXIT_ARTISTS_FAILED
from lyricdist.genius.limiter import LIMITER_NAMESPACE, limiter_name, shared_limiter

# --------------------------------------------------------------------------------------------------------------
# Cleaning (pure functions).
# --------------------------------------------------------------------------------------------------------------

DYLAN_GLUED = (
    "163 ContributorsTranslationsTürkçeEspañolDeutschFrançaisBlowin' in the Wind Lyrics[Verse 1]\n"
    "How many roads must a man walk down\n"
    "Before you call him a man?\n"
    "You might also like[Chorus]\n"
    "The answer, my friend, is blowin' in the wind\n"
    "The answer is blowin' in the wind\n"
    "See Bob Dylan LiveGet tickets as low as $86\n"
    "12Embed"
)
DYLAN_CLEAN = (
    "How many roads must a man walk down\n"
    "Before you call him a man?\n"
    "\n"
    "The answer, my friend, is blowin' in the wind\n"
    "The answer is blowin' in the wind"
)


def test_clean_glued_header_translations_tickets_and_embed():
    assert clean_genius_lyrics(DYLAN_GLUED, "Blowin' in the Wind", "Bob Dylan") == DYLAN_CLEAN


def test_clean_header_on_own_lines_with_description():
    raw = (
        "2 Contributors\nTranslations\nEspañol\nPortuguês\n"
        "Dancing Queen Lyrics“Dancing Queen” was released as a single in 1976… Read More\u00a0\n"
        "[Intro]\n[Verse 1: Agnetha & Frida]\nYou can dance, you can jive\nHaving the time of your life\n"
        "Embed"
    )
    assert clean_genius_lyrics(raw, "Dancing Queen", "ABBA") == "You can dance, you can jive\nHaving the time of your life"


def test_clean_header_when_title_spelling_differs():
    raw = "5 ContributorsBlowin’ in the Wind (Live) Lyrics[Verse]\nHow many roads\n7Embed"
    assert clean_genius_lyrics(raw, "Blowin' in the Wind", "Bob Dylan") == "How many roads"


def test_clean_keeps_lyrics_that_look_like_junk_words():
    raw = "See the way we live\nthese Lyrics are mine\n[Chorus]\nAnd we embed the night"
    assert clean_genius_lyrics(raw, "Other Song", "Someone") == "See the way we live\nthese Lyrics are mine\n\nAnd we embed the night"


def test_clean_title_heading_only_and_odd_spaces():
    raw = "Humble Lyrics[Intro]\nNobody\u2005pray\u205ffor me\n\n\n\n[Chorus: Kendrick Lamar]\nBe humble"
    assert clean_genius_lyrics(raw, "Humble", "Kendrick Lamar") == "Nobody pray for me\n\nBe humble"


@pytest.mark.parametrize(
    "raw, title",
    [
        ("HUMBLE. Lyrics[Intro]\nBe humble", "Humble"),  # case and punctuation differ from the API title
        ("Blowin’ in the Wind Lyrics\nBe humble", "Blowin' in the Wind"),  # curly quote on the page
        ("DON'T STOP Lyrics\nBe humble", "Don’t Stop"),
    ],
)
def test_clean_title_heading_ignores_case_quotes_and_punctuation(raw, title):
    assert clean_genius_lyrics(raw, title) == "Be humble"


def test_clean_title_heading_needs_the_word_lyrics_capitalised():
    assert clean_genius_lyrics("Humble lyrics are what I write", "Humble") == "Humble lyrics are what I write"


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("the wind12Embed", "the wind"),
        ("the wind\n12Embed", "the wind"),
        ("the wind\n1.2KEmbed", "the wind"),
        ("the wind\nEmbed", "the wind"),
        ("Route 662Embed", "Route 66"),  # a number ending the lyric keeps its digits, bar the counter's one
        ("Route 66\n2Embed", "Route 66"),
        ("Year 12345Embed", "Year 1234"),
        ("the wind12345Embed", "the wind1"),  # never more than a 4-digit counter
        ("catch 22 embedded in Embeds", "catch 22 embedded in Embeds"),
    ],
)
def test_clean_embed_counter(raw, clean):
    assert clean_genius_lyrics(raw) == clean


def test_clean_junk_only_is_empty():
    assert clean_genius_lyrics("1 ContributorInstrumental Lyrics[Instrumental]\nEmbed", "Instrumental") == ""
    assert clean_genius_lyrics("", "x") == ""


@pytest.mark.parametrize(
    "a, b, same",
    [
        ("Lanterns", "Lanterns (Remastered 2011)", True),
        ("Bohemian Rhapsody", "Bohemian Rhapsody - Remastered 2011", True),
        ("Love Story", "Love Story (Taylor’s Version)", True),
        ("HUMBLE.", "Humble", True),
        ("Song", "Song (Part 2)", False),
        ("(Sittin' On) The Dock of the Bay", "The Dock of the Bay", False),
        ("Song", "Song (feat. Someone)", True),
        ("Song", "Song (ft. Someone)", True),
        ("Song", "Song - Radio Edit", True),
        ("Song", "Song (Live at Wembley)", True),
        ("Song", "Song (Remix)", True),
        ("Delive", "Delive - Edition", False),  # "edit" inside a word is not a version tag
        ("Stayin'", "Stayin' (Alive)", False),
        ("Song", "Song - Deliverance", False),
        ("Song", "Song (Demolition)", False),
    ],
)
def test_normalise_title(a, b, same):
    assert (normalise_title(a) == normalise_title(b)) is same


def test_song_pages_exclude_api_calls_under_the_web_root():
    roots = genius_roots({})
    assert roots["PUBLIC_API_ROOT"].startswith(roots["WEB_ROOT"])  # the default layout this guards against
    assert is_song_page("https://genius.com/Abba-dancing-queen-lyrics", roots)
    assert not is_song_page("https://genius.com/api/search/multi?q=ABBA", roots)
    assert not is_song_page("https://api.genius.com/songs/1", roots)


def test_excluded_terms_match_literally():
    """"(Live)" and "(Remix)" drop those versions, never "Alive" (lyricsgenius >= 3.7.3 matches terms literally)."""
    with FakeGenius() as fake:
        genius = Genius(FAKE_TOKEN, genius_roots(fake.env))
        titles = [s.title for s in genius.search_artist("DJ Kilowatt", max_songs=10, get_full_info=False).songs]
        assert sorted(titles) == ["Alive", "Short Circuit", "Voltage"]  # not "Grid Down (Live)"
        titles = [s.title for s in genius.search_artist("Juniper Vale", max_songs=10, get_full_info=False).songs]
        assert "Paper Boats (Remix)" not in titles and "Juniper Vale Tracklist" not in titles and "Paper Boats" in titles


def test_clean_songs_dedupes_keeps_most_popular_and_counts_empty():
    songs = [
        {"title": "Lanterns", "song_id": 1, "lyrics_raw": "Lanterns Lyrics\nfirst take"},
        {"title": "Hollow", "song_id": 2, "lyrics_raw": "1 ContributorHollow Lyrics\n12Embed"},
        {"title": "Lanterns (Remastered 2011)", "song_id": 3, "lyrics_raw": "second take"},
        {"title": "Paper", "song_id": 4, "lyrics_raw": "paper boats"},
    ]
    rows, stats = clean_songs("Juniper Vale", 7, songs)
    assert [r["song_id"] for r in rows] == [1, 4]
    assert rows[0]["lyrics"] == "first take" and rows[0]["lyrics_raw"] == songs[0]["lyrics_raw"]
    assert (stats.kept, stats.empty, stats.duplicates) == (2, 1, 1)
    assert stats.chars == sum(r["n_chars"] for r in rows) == len("first take") + len("paper boats")


@pytest.mark.parametrize("name", ["AC/DC", "../x", "..", "/etc/passwd", "a\\b", " ", "C:\\evil"])
def test_record_filenames_stay_inside(name, tmp_path):
    filename = ArtistSpec(name).record_filename()
    assert "/" not in filename and "\\" not in filename and not filename.startswith(".")
    assert (tmp_path / filename).resolve().parent == tmp_path.resolve()


def test_record_filenames_distinguish_lookalikes():
    names = [ArtistSpec("AC/DC"), ArtistSpec("AC-DC"), ArtistSpec("AC/DC", 5)]
    assert len({s.record_filename() for s in names}) == 3


def test_original_artists_file():
    specs = load_artists_file(CONFIGS / "artists" / "original-21.yaml")
    names = {s.name for s in specs}
    assert len(specs) == 21 and {"Bob Dylan", "*NSYNC", "BROCKHAMPTON", "Michael Jackson", "Queen"} <= names
    assert any(s.genius_id for s in specs)


@pytest.mark.parametrize("text", ["- {name: Queen, id: -3}\n", "- {name: Queen, idd: 3}\n", "{a: 1}\n", "- [x]\n", "[]\n"])
def test_bad_artists_file(tmp_path, text):
    path = tmp_path / "a.yaml"
    path.write_text(text)
    with pytest.raises(LyricdistError, match="a.yaml"):
        load_artists_file(path)


def test_genius_roots_from_env():
    roots = genius_roots({"GENIUS_API_ROOT": "http://127.0.0.1:9/api"})
    assert roots["API_ROOT"] == "http://127.0.0.1:9/api/" and roots["WEB_ROOT"] == "https://genius.com/"
    with pytest.raises(LyricdistError, match="GENIUS_WEB_ROOT"):
        genius_roots({"GENIUS_WEB_ROOT": "genius.com"})


def test_ray_jobs_do_not_upload_scraped_data():
    import yaml
    from ray._private.thirdparty.pathspec import PathSpec  # what Ray matches runtime-env excludes with

    spec = yaml.safe_load((CONFIGS.parent / "launch" / "ray" / "runtime-env.yaml").read_text())
    excluded = PathSpec.from_lines("gitwildmatch", spec["excludes"]).match_file
    for path in ("data/lyrics/train/data-00000-of-00001.arrow", "corpus/train.bin", "runs/x/state.json",
                 "out/parquet/train.parquet"):
        assert excluded(path), path
    for path in ("lyricdist/genius/driver.py", "lyricdist/data.py", "configs/artists/original-21.yaml"):
        assert not excluded(path), path


def test_missing_token_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("GENIUS_ACCESS_TOKEN", raising=False)
    with pytest.raises(LyricdistError, match="GENIUS_ACCESS_TOKEN is not set"):
        scrape(["ABBA"], 5, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_to_replace_a_foreign_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", "t")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LyricdistError, match="holds other files"):
        scrape(["ABBA"], 5, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_help_lists_every_option_with_its_default(capsys):
    from lyricdist.cli import main

    with pytest.raises(SystemExit) as done:
        main(["scrape", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, default in [("--workers", "8"), ("--rate_limit", "5.0"), ("--retries", "5"), ("--timeout", "10.0"),
                            ("--backoff", "1.0"), ("--visibility", "private"), ("--progress", "True"),
                            ("--push_to_hub", "null"), ("--artists_file", "null")]:
        assert re.search(re.escape(option) + r" .*?default: " + re.escape(default), text), option
    assert "--max_songs MAX_SONGS most popular songs per artist (required, type: PositiveInt)" in text, text


@pytest.mark.parametrize("argv, problem", [
    (["--max_songs", "0"], 'Parser key "max_songs"'),
    (["--max_songs", "3", "--rate_limit", "-1"], 'Parser key "rate_limit"'),
    (["--max_songs", "3", "--retries", "-1"], 'Parser key "retries"'),
    (["--max_songs", "3", "--workers", "x"], 'Parser key "workers"'),
    (["--max_songs", "3", "--frobnicate"], "--frobnicate"),
    ([], "required: max_songs"),
])
def test_bad_arguments_are_one_line_errors(argv, problem, tmp_path, capsys):
    from lyricdist.cli import main

    assert main(["scrape", "ABBA", "--out", str(tmp_path / "ds"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lyricdist scrape: error:") and problem in err, err
    assert not (tmp_path / "ds").exists()


def test_python_callers_get_the_same_ranges(tmp_path):
    with pytest.raises(LyricdistError, match="workers must be > 0, got 0"):
        scrape(["ABBA"], 5, tmp_path / "ds", workers=0)
    with pytest.raises(LyricdistError, match="max_songs must be > 0, got 0"):
        scrape(["ABBA"], 0, tmp_path / "ds")


# --------------------------------------------------------------------------------------------------------------
# End to end: fake Genius over HTTP, local Ray.
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def fake_service():
    with FakeGenius() as fake:
        yield fake


@pytest.fixture
def fake(fake_service, local_ray, monkeypatch):
    fake_service.clear()
    fake_service.latency = 0.0
    for key, value in fake_service.env.items():
        monkeypatch.setenv(key, value)
    return fake_service


FAST = dict(rate_limit=500, backoff=0.01, timeout=0.5, progress=False)


def _rows(out: Path) -> list[dict]:
    import datasets

    return list(datasets.load_from_disk(str(out))["train"])


@pytest.mark.slow
def test_scrape_dataset_contents_through_faults(fake, tmp_path):
    import pandas as pd

    fake.inject(path="/web/", status=429, times=2)
    fake.inject(path="/api/songs/", status=500, times=1)
    fake.inject(path="/api/artists/102", delay=1.5, times=1)  # longer than the 0.5 s timeout
    fake.inject(path="/web/", cut_body=1.5, times=1)  # the body stalls past the timeout after headers came
    fake.inject(path="/api/artists/101/songs", cut_body=0, times=1)  # the connection drops mid-body
    out = tmp_path / "ds"
    report = scrape(["Juniper Vale", "DJ Kilowatt"], 20, out, parquet=True, **FAST)

    assert report.exit_code == 0, report.results
    assert fake.request_count() > 0 and all(f.times == 0 for f in fake._faults)  # every fault was met and retried
    rows = _rows(out)
    by_artist = {}
    for row in rows:
        by_artist.setdefault(row["artist"], []).append(row["title"])
    # most popular first (the fake lists by title unless asked for popularity); "(Remix)", "(Live)" (not
    # "Alive"), tracklists and unreleased songs are dropped; the remaster is a duplicate; "Hollow Hymn" is empty
    assert by_artist == {"Juniper Vale": ["Quiet Fields", "Lanterns", "Paper Boats"],
                         "DJ Kilowatt": ["Voltage", "Alive", "Short Circuit"]}
    juniper = next(r for r in report.results if r.name == "Juniper Vale")
    assert (juniper.songs, juniper.empty, juniper.duplicates) == (3, 1, 1)
    for row in rows:
        for junk in ("Contributors", "Translations", "Embed", "You might also like", "tickets", "[", " Lyrics"):
            assert junk not in row["lyrics"], (junk, row["lyrics"])
        assert "Contributors" in row["lyrics_raw"] and "Embed" in row["lyrics_raw"]
        assert row["n_chars"] == len(row["lyrics"]) > 0
        assert row["url"].startswith("https://genius.com/") and row["song_id"] > 0
    lanterns = next(r for r in rows if r["title"] == "Lanterns")
    assert lanterns["lyrics"] == "Lanterns on the water\ncarry us home\n\nOh the light, oh the light"
    assert (lanterns["artist_id"], lanterns["album"], lanterns["release_date"]) == (101, "Fake Album", "2011-03-04")
    quiet = next(r for r in rows if r["title"] == "Quiet Fields")
    assert quiet["album"] is None and quiet["release_date"] is None

    card = (out / "README.md").read_text()
    assert "| Juniper Vale | Juniper Vale | 3 |" in card and "| DJ Kilowatt | DJ Kilowatt | 3 |" in card
    parquet = pd.read_parquet(out / "parquet" / "train.parquet")
    assert sorted(parquet["song_id"]) == sorted(r["song_id"] for r in rows)


@pytest.mark.slow
def test_resume_skips_done_artists_and_retries_failed(fake, tmp_path):
    out = tmp_path / "ds"
    fake.inject(path="/api/artists/102", status=500, times=None)  # DJ Kilowatt is down for this run
    first = scrape(["Juniper Vale", "DJ Kilowatt"], 20, out, retries=1, **FAST)
    assert [r.status for r in first.results] == ["done", "failed"] and first.exit_code == EXIT_ARTISTS_FAILED
    assert "HTTP 500" in first.failed[0].error
    assert {r["artist"] for r in _rows(out)} == {"Juniper Vale"}  # the finished artist is saved

    fake.clear()
    second = scrape(["Juniper Vale", "DJ Kilowatt"], 20, out, **FAST)
    assert [r.status for r in second.results] == ["cached", "done"] and second.exit_code == 0
    assert fake.request_count("/api/artists/101") == 0 and fake.request_count("/api/artists/102") > 0
    assert {r["artist"] for r in _rows(out)} == {"Juniper Vale", "DJ Kilowatt"}

    fake.clear()
    fewer = scrape(["Juniper Vale"], 2, out, **FAST)  # a smaller --max_songs reuses the record
    assert fake.request_count() == 0 and fewer.results[0].status == "cached"
    assert [r["title"] for r in _rows(out)] == ["Quiet Fields", "Lanterns"]

    refreshed = scrape(["Juniper Vale"], 2, out, refresh=True, **FAST)
    assert refreshed.results[0].status == "done" and fake.request_count("/api/artists/101") > 0


@pytest.mark.slow
def test_cli_failure_report_exit_code_and_pinned_id(fake, tmp_path, capsys):
    from lyricdist.cli import main

    fake.misdirect("Queen", to="Queen Latifah")
    fake.inject(path="/api/artists/102", status=503, times=None)
    out = tmp_path / "ds"
    code = main(["scrape", "Queen", "DJ Kilowatt", "Juniper Vale", "--max_songs", "3", "--out", str(out),
                 "--retries", "0", "--rate_limit", "500", "--progress", "false"])
    captured = capsys.readouterr()
    assert code == EXIT_ARTISTS_FAILED
    assert "found 'Queen Latifah'" in captured.out and "HTTP 503" in captured.out
    assert "2 of 3 artists failed" in captured.err
    assert {r["artist"] for r in _rows(out)} == {"Juniper Vale"}

    pinned = tmp_path / "artists.yaml"
    pinned.write_text("- {name: Queen, id: 103}\n")
    code = main(["scrape", "--artists_file", str(pinned), "--max_songs", "3", "--out", str(out),
                 "--rate_limit", "500", "--progress", "false"])
    assert code == 0, capsys.readouterr()
    assert [r["title"] for r in _rows(out)] == ["Crown Song"]


@pytest.mark.slow
def test_token_never_written_or_logged(fake, tmp_path, capfd, caplog, local_ray, monkeypatch):
    from lyricdist.cli import main

    out = tmp_path / "ds"
    assert main(["scrape", "Juniper Vale", "--max_songs", "2", "--out", str(out), "--rate_limit", "500",
                 "--parquet", "true"]) == 0
    wrong = FAKE_TOKEN[::-1]  # rejected with 401: the error is reported without the token in it
    monkeypatch.setenv("GENIUS_ACCESS_TOKEN", wrong)
    assert main(["scrape", "DJ Kilowatt", "--max_songs", "2", "--out", str(out), "--rate_limit", "500",
                 "--retries", "0"]) == EXIT_ARTISTS_FAILED
    captured = capfd.readouterr()
    assert "HTTP 401" in captured.out

    session_logs = Path(local_ray._private.worker._global_node.get_session_dir_path()) / "logs"
    files = [p for p in out.rglob("*") if p.is_file()] + [p for p in session_logs.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.suffix == ".arrow" for p in files)
    for secret in (FAKE_TOKEN, wrong):
        assert secret not in captured.out + captured.err + caplog.text
        for path in files:
            assert secret.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_artist_names_never_leave_the_output_dir(fake, tmp_path):
    out = tmp_path / "nested" / "ds"
    report = scrape(["AC/DC", "../x"], 5, out, **FAST)
    assert report.exit_code == 0
    assert [p.name for p in tmp_path.iterdir()] == ["nested"] and [p.name for p in out.parent.iterdir()] == ["ds"]
    raw = sorted(p.name for p in (out / "raw").iterdir())
    assert len(raw) == 2 and all(p.parent == out / "raw" for p in (out / "raw").iterdir())
    assert {r["artist"] for r in _rows(out)} == {"AC/DC", "../x"}


@pytest.mark.slow
def test_rate_limit_is_shared_by_all_tasks(fake, tmp_path, local_ray):
    """Counted, not timed: the limiter's own bookings against the requests the fake served."""
    rate = 10.0
    with shared_limiter(rate, genius_roots()) as watcher:  # keeps the scrape's limiter up to read its bookings
        before = len(local_ray.get(watcher.actor.bookings.remote()))
        report = scrape(["Juniper Vale", "DJ Kilowatt", "Queen"], 20, tmp_path / "ds",
                        **{**FAST, "rate_limit": rate, "workers": 3})
        slots = local_ray.get(watcher.actor.bookings.remote())[before:]
    arrivals = sorted(fake.request_times())
    assert report.exit_code == 0 and len(arrivals) >= 25
    # three artists at once book from one limiter: it booked every request the fake served, no more
    assert len(slots) == len(arrivals)
    # one slot per 1/rate of limiter time, so no second holds more than `rate` of them
    assert min(b - a for a, b in zip(slots, slots[1:])) >= 1 / rate - 1e-9
    # and no request went out before its slot: by any moment, the fake had served at most the slots then due
    # (time.monotonic is one clock for every process on the machine; lateness cannot fail this)
    assert all(arrival >= slot for arrival, slot in zip(arrivals, sorted(slots)))


LIMITER_PROBE = """
import json, sys, ray
from lyricdist.genius.limiter import shared_limiter
ray.init(address=sys.argv[1], logging_level="ERROR")
with shared_limiter(float(sys.argv[3]), json.loads(sys.argv[2])) as limiter:
    print("wait", limiter.acquire())
"""


@pytest.mark.slow
def test_rate_limiter_is_shared_by_concurrent_jobs_and_keeps_bookings(local_ray):
    rate = 0.1  # one slot per 10 s on a frozen clock: waits are slot counts, not timings
    roots = {**genius_roots({}), "API_ROOT": "http://127.0.0.1:9/limiter-test/"}  # its own limiter
    with shared_limiter(rate, roots, clock=lambda: 1000.0) as limiter:
        assert [limiter.acquire() for _ in range(3)] == [0.0, 10.0, 20.0]

        # a second scrape driver (another Ray job) starting meanwhile books after them, at the same rate
        gcs = local_ray.get_runtime_context().gcs_address
        probe = subprocess.run([sys.executable, "-c", LIMITER_PROBE, gcs, json.dumps(roots), str(rate)],
                               capture_output=True, text=True, timeout=120)
        assert probe.returncode == 0, probe.stderr
        assert float(probe.stdout.split("wait", 1)[1]) == 30.0
        assert limiter.stats()["requests"] == 3  # each run counts its own


DYING_DRIVER = """
import json, os, sys, ray
from lyricdist.genius.limiter import shared_limiter
ray.init(address=sys.argv[1], logging_level="ERROR")
joined = shared_limiter(1.0, json.loads(sys.argv[2]))
joined.__enter__()
os._exit(0)  # a driver killed mid-scrape: it never leaves
"""


@pytest.mark.slow
def test_limiter_ends_when_its_last_job_leaves_or_dies(local_ray):
    roots = {**genius_roots({}), "API_ROOT": "http://127.0.0.1:9/limiter-lifetime/"}

    def limiter_exists() -> bool:
        try:
            local_ray.get_actor(limiter_name(roots), namespace=LIMITER_NAMESPACE)
        except ValueError:
            return False
        return True

    with shared_limiter(5.0, roots) as first:
        with shared_limiter(5.0, roots) as second:
            assert second.acquire() == 0.0 and first.stats()["requests"] == 0  # one limiter, two runs
        assert limiter_exists()  # the first job still uses it
    assert not limiter_exists()

    gcs = local_ray.get_runtime_context().gcs_address
    probe = subprocess.run([sys.executable, "-c", DYING_DRIVER, gcs, json.dumps(roots)],
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert limiter_exists()
    for _ in range(30):  # Ray reports the dead driver asynchronously; the next job to leave then ends it
        with shared_limiter(5.0, roots):
            pass
        if not limiter_exists():
            break
        time.sleep(1)
    assert not limiter_exists()


@pytest.mark.slow
def test_prepare_reads_the_scraped_dataset(fake, tmp_path):
    out = tmp_path / "ds"
    assert scrape(["Juniper Vale", "DJ Kilowatt"], 20, out, **FAST).exit_code == 0
    corpus = tmp_path / "corpus"
    run_cli("prepare", str(out), "--out", str(corpus), "--artists", "[juniper vale]")
    meta = json.loads((corpus / "meta.json").read_text())
    assert meta["artists"] == ["Juniper Vale"]
    assert (corpus / "train.bin").stat().st_size > 0


# --------------------------------------------------------------------------------------------------------------
# Blocked song pages, Retry-After, User-Agent.
# --------------------------------------------------------------------------------------------------------------


def _answer(retry_after: str | None = None):
    import requests

    response = requests.Response()
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return response


def test_retry_after_reads_seconds_and_http_dates():
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    from lyricdist.genius.client import MAX_RETRY_AFTER, _retry_after

    now = datetime.now(timezone.utc)
    assert _retry_after(_answer("7")) == 7.0
    assert 25 < _retry_after(_answer(format_datetime(now + timedelta(seconds=30), usegmt=True))) <= 30
    assert _retry_after(_answer(format_datetime(now - timedelta(hours=1), usegmt=True))) == 0.0
    assert _retry_after(_answer("Wed, 21 Oct 2015 07:28:00 -0000")) == 0.0  # a naive date in the past
    in_a_day = format_datetime(now + timedelta(days=1), usegmt=True)
    assert _retry_after(_answer("86400")) == _retry_after(_answer(in_a_day)) == MAX_RETRY_AFTER
    for junk in ("soon", "-3", "", "nan", "inf"):
        assert 0.0 <= _retry_after(_answer(junk)) <= MAX_RETRY_AFTER, junk
    assert _retry_after(_answer()) == 0.0


def test_user_agent_names_lyricdist_and_its_version(monkeypatch):
    import importlib.metadata

    import lyricdist
    from lyricdist.genius.client import user_agent

    assert user_agent().startswith(f"lyricdist/{importlib.metadata.version('lyricdist')} (")

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)  # e.g. a source checkout on PYTHONPATH
    assert user_agent().startswith(f"lyricdist/{lyricdist.__version__} (")


@pytest.mark.slow
def test_every_request_sends_the_lyricdist_user_agent(fake, tmp_path):
    from lyricdist.genius.client import user_agent

    assert scrape(["DJ Kilowatt"], 2, tmp_path / "ds", **FAST).exit_code == 0
    assert fake.request_count("/public/") and fake.request_count("/api/") and fake.request_count("/web/")
    agents = {h.get("user-agent") for h in fake.request_headers()}  # lyricsgenius adds the OS and Python version
    assert len(agents) == 1 and agents.pop().startswith(f"({user_agent()}) ("), agents


@pytest.mark.slow
@pytest.mark.parametrize("status, why", [(403, "song pages blocked (HTTP 403)"), (200, "no lyrics in page")])
def test_blocked_song_pages_fail_the_artist_and_a_rerun_retries_it(fake, tmp_path, capsys, status, why):
    from lyricdist.cli import main

    fake.block_pages("DJ Kilowatt", status=status)  # the API answers; its lyric pages are a bot wall
    out = tmp_path / "ds"
    argv = ["scrape", "Juniper Vale", "DJ Kilowatt", "AC/DC", "--max_songs", "4", "--out", str(out),
            "--retries", "1", "--rate_limit", "500", "--progress", "false"]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == EXIT_ARTISTS_FAILED, captured.out
    assert why in " ".join(captured.out.split()), captured.out
    assert "1 of 3 artists failed" in captured.err
    # its 3 songs ("Grid Down (Live)" is skipped) were each retried like any failed request
    assert fake.request_count("/web/Dj-kilowatt-") == 3 * 2
    rows = _rows(out)
    assert {r["artist"] for r in rows} == {"Juniper Vale", "AC/DC"} and all(r["lyrics"] for r in rows)
    saved = [json.loads(p.read_text())["name"] for p in (out / "raw").iterdir()]
    assert sorted(saved) == ["AC/DC", "Juniper Vale"]  # the failed artist is not saved as finished

    fake.clear()
    assert main(argv) == 0, capsys.readouterr().out
    assert fake.request_count("/api/artists/101") == fake.request_count("/api/artists/105") == 0  # cached
    assert fake.request_count("/web/Dj-kilowatt-") == 3
    assert {r["artist"] for r in _rows(out)} == {"Juniper Vale", "AC/DC", "DJ Kilowatt"}


@pytest.mark.slow
def test_artist_fails_when_more_than_half_its_songs_lack_lyrics(fake, tmp_path):
    out = tmp_path / "ds"
    # Juniper Vale's 5 fetched songs: "Paper Boats" blocked + "Hollow Hymn" empty = 2 of 5 without lyrics: done
    fake.block_pages("Juniper Vale", status=403, titles={"Paper Boats"})
    report = scrape(["Juniper Vale"], 20, out, retries=1, **FAST)
    assert report.exit_code == 0, report.results
    assert [r["title"] for r in _rows(out)] == ["Quiet Fields", "Lanterns"] and report.results[0].empty == 2
    record = json.loads(next((out / "raw").iterdir()).read_text())
    missing = {s["title"]: s.get("missing") for s in record["songs"] if "lyrics_raw" not in s}
    assert missing == {"Paper Boats": "song pages blocked (HTTP 403)", "Hollow Hymn": "empty lyrics"}
    assert all(clean_genius_lyrics(s["lyrics_raw"], s["title"]) for s in record["songs"] if "lyrics_raw" in s)

    # one more blocked page: 3 of 5 without lyrics, more than half: failed, and the rule is in the reason
    fake.block_pages("Juniper Vale", status=403, titles={"Paper Boats", "Lanterns (Remastered 2011)"})
    report = scrape(["Juniper Vale"], 20, out, refresh=True, retries=1, **FAST)
    assert report.exit_code == EXIT_ARTISTS_FAILED
    error = report.failed[0].error
    assert error.startswith("song pages blocked (HTTP 403) x2, empty lyrics x1: 3 of 5 songs without lyrics"), error
    assert "more than half" in error


@pytest.mark.slow
def test_a_saved_artist_with_mostly_empty_songs_is_scraped_again(fake, tmp_path):
    out = tmp_path / "ds"
    (out / "raw").mkdir(parents=True)
    spec = ArtistSpec("DJ Kilowatt")
    songs = [{"title": t, "song_id": i, "url": "", "album": None, "release_date": None, "lyrics_raw": ""}
             for i, t in [(2001, "Voltage"), (2004, "Alive"), (2003, "Short Circuit")]]
    record = {"version": 1, "name": spec.name, "genius_id": None, "max_songs": 4, "status": "done",
              "artist": "DJ Kilowatt", "artist_id": 102, "songs": songs}  # what a blocked scrape used to save
    (out / "raw" / spec.record_filename()).write_text(json.dumps(record))
    report = scrape([spec], 4, out, **FAST)
    assert report.results[0].status == "done" and fake.request_count("/web/") == 3
    assert [r["title"] for r in _rows(out)] == ["Voltage", "Alive", "Short Circuit"]


@pytest.mark.slow
def test_a_blocked_artist_stops_once_it_cannot_pass(fake, tmp_path):
    """Each blocked page costs its retries: once more than half of --max_songs pages were unreadable the artist
    fails whatever the rest say, so the rest are not fetched."""
    fake.block_pages("Juniper Vale", status=403)
    report = scrape(["Juniper Vale"], 4, tmp_path / "ds", retries=1, **FAST)
    assert report.exit_code == EXIT_ARTISTS_FAILED
    assert report.failed[0].error.startswith("song pages blocked (HTTP 403) x3: 3 of 3 songs"), report.failed[0].error
    assert "stopped early" in report.failed[0].error
    assert fake.request_count("/web/Juniper-vale-") == 3 * 2  # 3 pages x (1 try + 1 retry), not 4


@pytest.mark.slow
def test_a_deleted_song_page_is_not_retried(fake, tmp_path):
    """404/410: no retry brings a deleted page back; the song is left out as "page gone", not as blocked."""
    fake.block_pages("Juniper Vale", status=404, titles={"Paper Boats"})
    out = tmp_path / "ds"
    report = scrape(["Juniper Vale"], 20, out, retries=3, **FAST)
    assert report.exit_code == 0, report.results
    assert fake.request_count("/web/Juniper-vale-paper-boats") == 1
    record = json.loads(next((out / "raw").iterdir()).read_text())
    assert {s["title"]: s.get("missing") for s in record["songs"]}["Paper Boats"] == "song page gone (HTTP 404)"


# --------------------------------------------------------------------------------------------------------------
# Pushing to the Hub: the fake Hugging Face Hub (tests/fake_hf.py) on 127.0.0.1 behind HF_ENDPOINT.
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub.constants

    # conftest keeps huggingface_hub offline (read once, at import); this endpoint is the local fake
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield hub


def _written_dataset(out: Path):
    from lyricdist.genius.dataset import write_dataset
    from lyricdist.genius.report import ArtistResult, ScrapeReport

    songs = [{"title": "Lanterns", "song_id": 1, "url": "u", "lyrics_raw": "Lanterns Lyrics\nfirst take"},
             {"title": "Paper", "song_id": 4, "url": "u", "lyrics_raw": "paper boats"}]
    rows, stats = clean_songs("Juniper Vale", 7, songs)
    report = ScrapeReport(out, [ArtistResult("Juniper Vale", "done", "Juniper Vale", stats.kept, stats.chars)])
    write_dataset(out, rows, report, progress=False)
    return rows


@pytest.mark.parametrize("visibility", ["private", "public"])
def test_push_sends_our_card_and_the_data_to_a_private_repo(fake_hub, tmp_path, visibility):
    import io

    import pandas as pd

    from lyricdist.genius.dataset import HUB_DATA_FILE, push_to_hub

    out = tmp_path / "ds"
    rows = _written_dataset(out)
    push_to_hub(out, "someone/lyrics", visibility=visibility)

    create = fake_hub.body("/api/repos/create")
    assert (create["organization"], create["name"], create["type"]) == ("someone", "lyrics", "dataset")
    assert create.get("visibility", "private" if create.get("private") else "public") == visibility
    files = fake_hub.commits[-1]["files"]
    assert set(files) == {"README.md", HUB_DATA_FILE}
    assert files["README.md"] == (out / "README.md").read_bytes()  # the card this scrape wrote, not the Hub's
    assert b"| Juniper Vale | Juniper Vale | 2 |" in files["README.md"]
    pushed = pd.read_parquet(io.BytesIO(files[HUB_DATA_FILE]))
    assert list(pushed["lyrics"]) == [r["lyrics"] for r in rows] == ["first take", "paper boats"]


def test_push_failure_names_todays_login_command(fake_hub, tmp_path):
    from lyricdist.genius.dataset import push_to_hub

    out = tmp_path / "ds"
    _written_dataset(out)
    fake_hub.fail_create = 401
    with pytest.raises(LyricdistError) as failed:
        push_to_hub(out, "someone/lyrics")
    message = str(failed.value)
    assert "`hf auth login`" in message and "huggingface-cli" not in message and "\n" not in message
    assert "hf_fake_token_for_tests" not in message
    assert (out / "dataset_dict.json").is_file()  # the dataset on disk is untouched


@pytest.mark.slow
def test_login_command_in_messages_exists_in_the_installed_hub_cli():
    from lyricdist.genius.dataset import LOGIN_HINT

    command = re.search(r"`hf (.+?)`", LOGIN_HINT).group(1).split()  # the `hf` CLI ships with huggingface_hub
    result = subprocess.run([sys.executable, "-m", "huggingface_hub.cli.hf", *command, "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Usage:" in result.stdout, result.stderr


@pytest.mark.slow
def test_cli_push_to_hub_sends_the_card_it_wrote(fake, fake_hub, tmp_path, capsys):
    from lyricdist.cli import main

    out = tmp_path / "ds"
    assert main(["scrape", "Juniper Vale", "--max_songs", "2", "--out", str(out), "--rate_limit", "500",
                 "--progress", "false", "--push_to_hub", "someone/lyrics"]) == 0, capsys.readouterr()
    assert fake_hub.body("/api/repos/create").get("visibility") == "private"
    assert fake_hub.commits[-1]["files"]["README.md"] == (out / "README.md").read_bytes()
