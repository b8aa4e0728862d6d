"""`lyricdist scrape`: Genius lyrics for many artists, one Ray task per artist, into a HuggingFace dataset.

lyricsgenius does the HTTP; a requests adapter mounted on its session adds what it lacks: a request-rate limit
shared by every task of every job in the cluster (a named, detached Ray actor per Genius API root), and retries
with exponential backoff and jitter on 429 (waiting at least its Retry-After), 5xx, timeouts, connections dropped
before or during the body, and song pages that are not lyrics pages (lyricsgenius raises AssertionError on a
non-200 API answer, reads error and bot-challenge pages as songs without lyrics, and retries only timeouts).
Every request names lyricdist in its User-Agent.

Genius blocks many cloud IPs from its song pages (403, or a challenge page that says 200) while its API still
answers. A song whose page held no lyrics after every retry, or whose lyrics are empty, is never written to the
dataset; an artist fails when more than half of its fetched songs came back without lyrics, with the reasons
counted in its error (e.g. "song pages blocked (HTTP 403) x4: 4 of 4 songs without lyrics ...").

Each finished artist is saved at once under OUT/raw/, so a crash loses only the artists in flight and a re-run
skips finished ones (`--refresh` redoes them) and retries failed ones.

Exit codes: 0 every artist done; 1 bad input (e.g. GENIUS_ACCESS_TOKEN unset); 2 bad arguments;
3 (EXIT_ARTISTS_FAILED) one or more artists failed: the others are saved, a re-run retries only the failed ones.

Layout of OUT: dataset_dict.json + train/ (`datasets.load_from_disk(OUT)`), README.md (dataset card with
per-artist counts), raw/ (one JSON per artist: uncleaned lyrics and metadata, the resume state),
parquet/train.parquet with --parquet.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import random
import re
import shutil
import sys
import time
import unicodedata
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import ray
import requests
from requests.adapters import HTTPAdapter

from .errors import LyricdistError
from .fileio import atomic_dir, atomic_write_json, recover_dir

EXIT_ARTISTS_FAILED = 3
TOKEN_ENV = "GENIUS_ACCESS_TOKEN"
ROOT_ENVS = {  # env var -> (lyricsgenius Sender attribute, default)
    "GENIUS_API_ROOT": ("API_ROOT", "https://api.genius.com/"),
    "GENIUS_PUBLIC_API_ROOT": ("PUBLIC_API_ROOT", "https://genius.com/api/"),
    "GENIUS_WEB_ROOT": ("WEB_ROOT", "https://genius.com/"),
}
EXCLUDED_TERMS = ["(Remix)", "(Live)"]  # on top of lyricsgenius's defaults (tracklist, skit, ...)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
PAGE_GONE = frozenset({404, 410})
MAX_RETRY_AFTER = 300.0  # seconds; a longer Retry-After is cut short (retrying early then costs one attempt)
LYRICS_PAGE_MARKERS = (b"data-lyrics-container", b"__PRELOADED_STATE__")  # where lyricsgenius finds lyrics
LIMITER_NAME = "lyricdist-genius-rate-limiter"
LIMITER_NAMESPACE = "lyricdist"  # fixed, so that every job on the cluster finds the same limiter
RECORD_VERSION = 1


# --------------------------------------------------------------------------------------------------------------
# Cleaning: pure functions on the text lyricsgenius returns.
# --------------------------------------------------------------------------------------------------------------

_CONTRIBUTORS = re.compile(r"\s*\d[\d,.]*K?\s*Contributors?", re.I)
_SECTION_HEADER = re.compile(r"\[[^\]\n]*\]")
_MIGHT_ALSO_LIKE = re.compile(r"You might also like\n?", re.I)
_TICKETS = re.compile(r"Get tickets as low as \$[\d.,]+")
_SEE_LIVE = re.compile(r"See ([^\n]{1,80}?) Live(?=Get tickets)")
_EMBED = re.compile(r"(\d+(?:\.\d)?K|\d*)Embed\s*\Z")
_ODD_SPACES = str.maketrans({"\u2005": " ", "\u205f": " ", "\xa0": " ", "\u200b": None, "\u2009": " "})
_VERSION_WORDS = re.compile(
    r"\b(?:remaster(?:ed)?|live|demo|versions?|(?:re)?mix(?:es|ed)?|edit|mono|stereo|acoustic|feat(?:uring)?|ft"
    r"|instrumental|radio|extended|bonus|deluxe)\b",
    re.I,
)


def _title_heading(title: str) -> str | None:
    """A pattern for Genius's "<Title> Lyrics" heading that ignores case, quote style and punctuation, as the
    page may spell the title differently from the API ("HUMBLE. Lyrics" for "Humble", ’ for ')."""
    words = re.findall(r"\w+", title)
    return "(?i:" + r"\W+".join(map(re.escape, words)) + r")\W*Lyrics" if words else None


def _strip_page_header(text: str, title: str) -> str:
    """Drop "N Contributors", a "Translations" language list and the "<Title> Lyrics" heading (+ its blurb)."""
    head = text.lstrip()
    junk_prefix = _CONTRIBUTORS.match(head) or head.startswith("Translations")
    patterns = [p for p in [_title_heading(title)] if p]
    if junk_prefix:
        patterns.append(r"Lyrics")  # the first "Lyrics" after the contributor/translation block ends the heading
    for pattern in patterns:
        found = re.search(pattern, head[:3000])
        if found and (junk_prefix or found.start() == 0):
            head = head[found.end():]
            first, sep, rest = head.partition("\n")
            if "Read More" in first:  # the song description Genius shows under the heading
                head = first.split("Read More", 1)[1] + sep + rest
            return head
    if junk_prefix and _CONTRIBUTORS.match(head):
        return head[_CONTRIBUTORS.match(head).end():]
    return head


def _strip_embed(text: str) -> str:
    """Drop the "<counter>Embed" Genius glues to the end of the lyrics ("...the wind12Embed", "1.2KEmbed").

    The counter is at most 4 digits (or "1.2K"); longer digit runs keep their leading digits. When the lyric's
    last word is itself a number ("Route 662Embed"), where the number ends is unknowable: the counter is taken
    to be one digit, so the lyric keeps "Route 66" (a stray digit is less harm than a lost lyric word).
    """
    found = _EMBED.search(text)
    if not found:
        return text
    before, counter = text[: found.start()], found.group(1)
    if counter.isdigit() and before[-1:] in (" ", "\t"):
        return before + counter[:-1]
    if counter.isdigit() and len(counter) > 4:
        return before + counter[:-4]
    return before


def clean_lyrics(raw: str, title: str = "", artist: str = "") -> str:
    """Lyrics without the Genius page junk that leaks through lyricsgenius, and without [Section] headers.

    Stanza breaks (one blank line) are kept; the result has no leading/trailing blank lines.
    """
    text = (raw or "").translate(_ODD_SPACES).replace("\r\n", "\n")
    text = _strip_page_header(text, title)
    text = _strip_embed(text.rstrip())
    text = _MIGHT_ALSO_LIKE.sub("\n", text)
    text = _SEE_LIVE.sub("\n", text)
    text = _TICKETS.sub("\n", text)
    if artist:
        text = re.sub(rf"^See {re.escape(artist)} Live$", "", text, flags=re.M | re.I)
    text = _SECTION_HEADER.sub("", text)
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")


def normalise_title(title: str) -> str:
    """A key under which re-releases of one song collide: "Lanterns (Remastered 2011)" == "lanterns"."""
    text = unicodedata.normalize("NFKC", title or "").casefold()
    text = text.replace("’", "'").replace("‘", "'")
    # trailing "(...)"/"[...]" groups and " - ..." suffixes that only name a version
    while True:
        m = re.search(r"\s*(?:\(([^()]*)\)|\[([^\[\]]*)\]|\s-\s+([^-]*))\s*$", text)
        if not m or not _VERSION_WORDS.search(next(g for g in m.groups() if g is not None)):
            break
        text = text[: m.start()]
    return " ".join(re.findall(r"\w+", text))


@dataclass
class CleanStats:
    kept: int = 0
    empty: int = 0
    duplicates: int = 0
    chars: int = 0


def clean_songs(artist: str, artist_id: int, songs: Iterable[dict]) -> tuple[list[dict], CleanStats]:
    """Dataset rows for one artist's raw songs (most popular first): cleaned, empty ones dropped, re-releases
    de-duplicated by normalised title (the first, most popular, wins)."""
    rows: list[dict] = []
    stats = CleanStats()
    seen: set[str] = set()
    for song in songs:
        lyrics = clean_lyrics(song.get("lyrics_raw") or "", song.get("title") or "", artist)
        if not lyrics.strip():
            stats.empty += 1
            continue
        key = normalise_title(song.get("title") or "") or f"#{song.get('song_id')}"
        if key in seen:
            stats.duplicates += 1
            continue
        seen.add(key)
        rows.append(
            {
                "artist": artist,
                "artist_id": int(artist_id),
                "title": song.get("title") or "",
                "song_id": int(song["song_id"]),
                "url": song.get("url") or "",
                "album": song.get("album"),
                "release_date": song.get("release_date"),
                "lyrics": lyrics,
                "lyrics_raw": song.get("lyrics_raw") or "",
                "n_chars": len(lyrics),
            }
        )
        stats.kept += 1
        stats.chars += len(lyrics)
    return rows, stats


# --------------------------------------------------------------------------------------------------------------
# Artists.
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtistSpec:
    """An artist to scrape: a name to search for, or a pinned Genius id (name search can find the wrong one)."""

    name: str
    genius_id: int | None = None

    @property
    def label(self) -> str:
        return self.name if self.genius_id is None else f"{self.name} (#{self.genius_id})"

    def record_filename(self) -> str:
        """A file name that no artist name can steer outside its directory ("AC/DC", "../x" are safe)."""
        readable = re.sub(r"[^a-z0-9]+", "-", self.name.casefold()).strip("-")[:48] or "artist"
        digest = hashlib.sha1(f"{self.name}\0{self.genius_id}".encode()).hexdigest()[:10]
        return f"{readable}-{digest}.json"


def parse_artist_entry(entry: Any, origin: str) -> ArtistSpec:
    if isinstance(entry, str) and entry.strip():
        return ArtistSpec(entry.strip())
    if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"].strip():
        unknown = set(entry) - {"name", "id"}
        gid = entry.get("id")
        if unknown or (gid is not None and (isinstance(gid, bool) or not isinstance(gid, int) or gid <= 0)):
            raise LyricdistError(f"{origin}: bad artist entry {entry!r}; use a name or {{name: NAME, id: GENIUS_ID}}")
        return ArtistSpec(entry["name"].strip(), gid)
    raise LyricdistError(f"{origin}: bad artist entry {entry!r}; use a name or {{name: NAME, id: GENIUS_ID}}")


def load_artists_file(path: str | os.PathLike) -> list[ArtistSpec]:
    """A YAML list whose entries are names or `{name: NAME, id: GENIUS_ID}` (see configs/artists/)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LyricdistError(f"artists file {str(path)!r} does not exist; give a YAML list of artist names")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise LyricdistError(f"artists file {path} is not valid YAML ({e}); give a list of names") from None
    if not isinstance(data, list) or not data:
        raise LyricdistError(f"artists file {path} must hold a non-empty YAML list of artist names")
    return [parse_artist_entry(entry, str(path)) for entry in data]


def _unique(specs: Iterable[ArtistSpec]) -> list[ArtistSpec]:
    seen: set[tuple[str, int | None]] = set()
    out = []
    for spec in specs:
        key = (spec.name.casefold(), spec.genius_id)
        if key not in seen:
            seen.add(key)
            out.append(spec)
    return out


# --------------------------------------------------------------------------------------------------------------
# Talking to Genius (runs inside Ray tasks).
# --------------------------------------------------------------------------------------------------------------


class GeniusUnavailable(Exception):
    """Genius kept answering 429/5xx or timing out after every retry."""


class NotALyricsPage(Exception):
    """A song page was still not a lyrics page after every retry; the message says why (it names no URL, so
    that an artist's reasons can be counted)."""


class _Secret:
    """The access token in transit to Ray tasks; its repr never shows the value."""

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"


def genius_roots(env: dict[str, str] | None = None) -> dict[str, str]:
    """Base URLs (lyricsgenius attribute -> URL) from GENIUS_API_ROOT / _PUBLIC_API_ROOT / _WEB_ROOT."""
    env = os.environ if env is None else env
    roots = {}
    for var, (attr, default) in ROOT_ENVS.items():
        url = env.get(var) or default
        if not re.match(r"https?://", url):
            raise LyricdistError(f"{var}={url!r} is not an http(s) URL; unset it or give e.g. {default}")
        roots[attr] = url if url.endswith("/") else url + "/"
    return roots


def is_song_page(url: str, roots: dict[str, str]) -> bool:
    """A lyric page, not an API call: the default public API root (genius.com/api/) lies under the web root."""
    return url.startswith(roots["WEB_ROOT"]) and not url.startswith((roots["API_ROOT"], roots["PUBLIC_API_ROOT"]))


@ray.remote(num_cpus=0)
class RateLimiter:
    """One request-rate limit for every task of every job in the cluster: each request books the next free slot.

    Progress counts are kept per run (a `run` key chosen by each driver), so concurrent scrapes that share the
    budget still each report their own requests and songs.
    """

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self.next_free = time.monotonic()
        self.runs: dict[str, dict] = {}

    def configure(self, rate: float) -> None:
        """The latest job's rate applies to everyone; slots already booked stay booked."""
        self.interval = 1.0 / rate

    def _run(self, run: str) -> dict:
        return self.runs.setdefault(run, {"requests": 0, "retries": 0, "songs": 0, "started": time.monotonic()})

    def acquire(self, run: str = "", retry: bool = False) -> float:
        """Seconds the caller must wait before sending its request."""
        now = time.monotonic()
        slot = max(now, self.next_free)
        self.next_free = slot + self.interval
        counts = self._run(run)
        counts["requests"] += 1
        counts["retries"] += int(retry)
        return slot - now

    def pause(self, seconds: float) -> None:
        """Genius said 429: nobody sends for a while."""
        self.next_free = max(self.next_free, time.monotonic() + seconds)

    def song_fetched(self, run: str = "") -> None:
        self._run(run)["songs"] += 1

    def stats(self, run: str = "") -> dict:
        counts = dict(self._run(run))
        return {**counts, "seconds": time.monotonic() - counts.pop("started")}

    def forget(self, run: str) -> None:
        self.runs.pop(run, None)


def shared_limiter(rate: float, roots: dict[str, str]):
    """The cluster's rate limiter for the Genius API at `roots` (one per API root, since the budget is Genius's),
    created on first use; detached, so it outlives the job that created it while other jobs still use it."""
    digest = hashlib.sha1(roots["API_ROOT"].encode()).hexdigest()[:10]
    limiter = RateLimiter.options(
        name=f"{LIMITER_NAME}-{digest}", namespace=LIMITER_NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(rate)
    ray.get(limiter.configure.remote(rate))
    return limiter


def user_agent() -> str:
    """Sent with every request, so that Genius can tell this tool's traffic from anonymous clients."""
    from importlib import metadata

    try:
        version = metadata.version("lyricdist")
    except metadata.PackageNotFoundError:  # a source checkout on PYTHONPATH
        from . import __version__ as version
    return f"lyricdist/{version} (Genius lyrics scraper for research) python-requests/{requests.__version__}"


def _retry_after(response: requests.Response) -> float:
    """Seconds Retry-After asks for, as delta-seconds or an HTTP-date; 0 without a readable one, at most
    MAX_RETRY_AFTER."""
    value = response.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        if when.tzinfo is None:  # a "-0000" zone: UTC
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def _page_problem(response: requests.Response) -> str | None:
    """Why a song page answer is not a lyrics page: a blocked client gets 403 or a challenge page with 200."""
    if response.status_code in PAGE_GONE:
        return f"song page gone (HTTP {response.status_code})"
    if response.status_code >= 400:
        return f"song pages blocked (HTTP {response.status_code})"
    if response.status_code == 200 and not any(m in response.content for m in LYRICS_PAGE_MARKERS):
        return "no lyrics in page"
    return None  # a lyrics page, or a redirect the session follows (and whose target is checked in turn)


class PoliteAdapter(HTTPAdapter):
    """Every request waits for the shared rate limiter; 429/5xx, timeouts, connections dropped before or during
    the body, and song pages that are not lyrics pages are retried with backoff and jitter."""

    def __init__(self, limiter, roots: dict[str, str], retries: int, backoff: float, max_backoff: float = 60.0,
                 run: str = ""):
        super().__init__()
        self.limiter = limiter
        self.roots = roots
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.run = run

    def send(self, request, **kwargs):
        is_page = is_song_page(request.url, self.roots)
        attempt = 0
        while True:
            wait = ray.get(self.limiter.acquire.remote(self.run, retry=attempt > 0))
            if wait > 0:
                time.sleep(wait)
            retry_after = 0.0
            page_problem = None
            try:
                response = super().send(request, **kwargs)
                if not kwargs.get("stream"):
                    # Session.send would read the body after we return, out of reach of these retries
                    _ = response.content
            except requests.Timeout:
                problem = "timed out"
            except requests.ConnectionError:  # includes a read timeout mid-body
                problem = "connection failed"
            except requests.exceptions.ChunkedEncodingError:  # the body ended early
                problem = "connection dropped mid-body"
            else:
                if response.status_code in RETRY_STATUSES:
                    problem = f"HTTP {response.status_code}"
                    retry_after = _retry_after(response)
                    if response.status_code == 429:
                        self.limiter.pause.remote(max(retry_after, self.backoff))
                else:
                    page_problem = problem = _page_problem(response) if is_page else None
                    if problem is None:
                        if is_page and response.status_code == 200:
                            self.limiter.song_fetched.remote(self.run)
                        return response
                    if response.status_code in PAGE_GONE:  # a deleted page: no retry brings it back
                        response.close()
                        raise NotALyricsPage(page_problem)
                response.close()
            if attempt >= self.retries:
                if page_problem:
                    raise NotALyricsPage(page_problem)
                where = request.url.split("?", 1)[0]
                raise GeniusUnavailable(f"{problem} on {where} after {attempt + 1} attempts")
            step = min(self.max_backoff, self.backoff * 2**attempt)
            time.sleep(max(retry_after, step / 2 + random.uniform(0, step / 2)))
            attempt += 1


def is_excluded_title(title: str) -> bool:
    """True for titles holding one of EXCLUDED_TERMS, matched literally and case-insensitively ("Alive" stays)."""
    folded = title.casefold()
    return any(term.casefold() in folded for term in EXCLUDED_TERMS)


def genius_client(token: str, roots: dict[str, str], timeout: float = 10.0):
    """A lyricsgenius client with the issue's settings and our User-Agent, pointed at `roots` (see `genius_roots`).

    EXCLUDED_TERMS are applied here, not passed to lyricsgenius: before 3.x releases that escape them, it read
    excluded terms as regexes, so "(Live)" also dropped "Alive".
    """
    from lyricsgenius import Genius

    genius = Genius(
        token,
        timeout=timeout,
        sleep_time=0,  # the shared rate limiter paces requests
        retries=0,  # PoliteAdapter retries
        remove_section_headers=False,  # clean_lyrics removes them, so lyrics_raw keeps them
        skip_non_songs=True,
    )
    genius._session.headers["User-Agent"] = user_agent()  # lyricsgenius sends only the OS and Python version
    for attr, url in roots.items():
        setattr(genius, attr, url)  # instance attributes shadow lyricsgenius's class constants
    # lyricsgenius's filter for the songs it fetches, wrapped on the instance (a subclass would lose the token:
    # lyricsgenius checks `type(self).__name__ == "Genius"` to tell itself from its public-API-only client)
    library_filter = genius._result_is_lyrics
    genius._result_is_lyrics = lambda song: library_filter(song) and not is_excluded_title(song.get("title") or "")
    return genius


class ArtistBlocked(Exception):
    """More than half of an artist's --max-songs pages were unreadable: the artist fails whatever the rest say,
    so the remaining pages (each retried with backoff) are not fetched."""


def _note_unreadable_pages(genius, max_songs: int | None) -> dict[str, str]:
    """Song URL -> why its page was not a lyrics page, filled in as lyricsgenius fetches pages; such a song
    gets no lyrics instead of failing the whole artist (the threshold in `_lyrics_failure` decides). Once more
    than half of max_songs pages were unreadable the artist cannot pass: ArtistBlocked stops it early."""
    unreadable: dict[str, str] = {}
    library_lyrics = genius.lyrics

    def lyrics(*args, song_url=None, **kwargs):
        try:
            return library_lyrics(*args, song_url=song_url, **kwargs)
        except NotALyricsPage as e:
            unreadable[song_url] = str(e)
            if max_songs and len(unreadable) * 2 > max_songs:
                raise ArtistBlocked() from None
            return None

    genius.lyrics = lyrics  # on the instance, as for `_result_is_lyrics` in `genius_client`
    return unreadable


def _missing(song: dict) -> str | None:
    """Why a record's song has no lyrics, or None (records saved before "missing" existed kept empty lyrics)."""
    if "missing" in song:
        return song["missing"]
    return None if clean_lyrics(song.get("lyrics_raw") or "", song.get("title") or "") else "empty lyrics"


def _lyrics_failure(songs: list[dict]) -> str | None:
    """Why the artist failed, when more than half of its fetched songs came back without lyrics: its data would
    be mostly holes, most likely from blocked song pages that a later run may get."""
    missing = [why for why in map(_missing, songs) if why]
    if len(missing) * 2 <= len(songs):
        return None
    counts = ", ".join(f"{why} x{n}" for why, n in Counter(missing).most_common())
    return f"{counts}: {len(missing)} of {len(songs)} songs without lyrics (more than half fails an artist)"


def _describe_error(error: BaseException, token: str) -> str:
    if isinstance(error, AssertionError):  # lyricsgenius on a non-200 API answer
        status = re.search(r"status code: (\d+)", str(error))
        text = f"Genius answered HTTP {status.group(1)}" if status else "unexpected answer from Genius"
        if status and status.group(1) == "401":
            text += f" (is {TOKEN_ENV} a valid client access token?)"
    elif isinstance(error, GeniusUnavailable):
        text = f"Genius unavailable: {error}"
    else:
        text = f"{type(error).__name__}: {error}"
    text = " ".join(text.split())[:300]
    return text.replace(token, "<token>") if token else text


def fetch_artist(
    spec: ArtistSpec,
    max_songs: int,
    token: _Secret,
    roots: dict[str, str],
    limiter,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 10.0,
    run: str = "",
) -> dict:
    """One artist's raw record: {"status": "done", songs...} or {"status": "failed", "error": ...}; never raises."""
    started = time.monotonic()
    base = {"version": RECORD_VERSION, "name": spec.name, "genius_id": spec.genius_id, "max_songs": max_songs}
    try:
        genius = genius_client(token.reveal(), roots, timeout=timeout)
        adapter = PoliteAdapter(limiter, roots, retries=retries, backoff=backoff, run=run)
        genius._session.mount("http://", adapter)
        genius._session.mount("https://", adapter)
        unreadable = _note_unreadable_pages(genius, max_songs)
        artist_id = spec.genius_id
        if artist_id is None:
            found = genius.search_artist(spec.name, max_songs=0, allow_name_change=True)
            if found is None:
                return {**base, "status": "failed", "error": f"no Genius artist matches {spec.name!r}; check the spelling"}
            artist_id = found._body["id"]
            if _normal_name(found.name) != _normal_name(spec.name):
                return {
                    **base,
                    "status": "failed",
                    "error": f"Genius search for {spec.name!r} found {found.name!r} (id {artist_id}); "
                    f"pin the right id in the artists file: {{name: {spec.name}, id: GENIUS_ID}}",
                }
        try:
            artist = genius.search_artist(spec.name, max_songs=max_songs, sort="popularity", artist_id=artist_id)
        except ArtistBlocked:
            placeholders = [{"missing": why} for why in unreadable.values()]
            return {**base, "status": "failed", "error": _lyrics_failure(placeholders) + "; stopped early"}
        if artist is None:
            return {**base, "status": "failed", "error": f"Genius has no artist with id {artist_id}"}
        songs = []
        for song in artist.songs:
            entry = {
                "title": song.title,
                "song_id": int(song._body["id"]),
                "url": song.url,
                "album": (song.album or {}).get("name"),
                "release_date": song._body.get("release_date"),
                "lyrics_raw": song.lyrics or "",
            }
            why = unreadable.get(song.url) or _missing(entry)
            if why:  # kept as a placeholder (for the counts and --max-songs order), never as data
                del entry["lyrics_raw"]
                entry["missing"] = why
            songs.append(entry)
        failure = _lyrics_failure(songs)
        if failure:
            return {**base, "status": "failed", "error": failure}
        return {
            **base,
            "status": "done",
            "artist": artist.name,
            "artist_id": int(artist_id),
            "songs": songs,
            "seconds": round(time.monotonic() - started, 3),
        }
    except Exception as e:  # one artist's trouble is reported, never raised into the driver
        return {**base, "status": "failed", "error": _describe_error(e, token.reveal())}


def _normal_name(name: str) -> str:
    from lyricsgenius.utils import clean_str

    return clean_str(name)


# --------------------------------------------------------------------------------------------------------------
# The driver.
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ArtistResult:
    name: str
    status: str  # done | cached | failed
    artist: str = ""
    songs: int = 0
    chars: int = 0
    empty: int = 0
    duplicates: int = 0
    error: str = ""


@dataclass
class ScrapeReport:
    out: Path
    results: list[ArtistResult] = field(default_factory=list)
    dataset_written: bool = False

    @property
    def failed(self) -> list[ArtistResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def exit_code(self) -> int:
        return EXIT_ARTISTS_FAILED if self.failed else 0

    def table(self):
        from rich.table import Table

        table = Table(title=f"lyricdist scrape -> {self.out}")
        for col, justify in [("artist", "left"), ("genius name", "left"), ("songs", "right"), ("chars", "right"),
                             ("empty", "right"), ("dupes", "right"), ("status", "left"), ("error", "left")]:
            table.add_column(col, justify=justify, overflow="fold")
        for r in self.results:
            status = {"failed": "[red]failed[/red]", "cached": "done (cached)"}.get(r.status, r.status)
            table.add_row(r.name, r.artist, str(r.songs), f"{r.chars:,}", str(r.empty), str(r.duplicates),
                          status, r.error)
        return table


def _load_record(path: Path, spec: ArtistSpec, max_songs: int) -> dict | None:
    """A finished artist's record if it can be reused for this request (not one that `_lyrics_failure` fails,
    as older versions saved for blocked song pages)."""
    import json

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
    return None if _lyrics_failure(record["songs"]) else record


def _start_ray() -> bool:
    """Connect to RAY_ADDRESS's cluster or start a local one; True when this call started the connection."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:  # a cluster (set by `ray job submit` for a job's driver, or by the user)
        ray.init(address=address, logging_level="WARNING")
    else:  # a private local instance on loopback: never a stale or someone else's `ray start` cluster
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, logging_level="WARNING")
    return True


def _run_tasks(pending, max_songs, token, roots, workers, rate_limit, retries, backoff, timeout, on_record, progress,
               n_total, n_cached):
    """Keep `workers` artist tasks in flight; hand each finished record to `on_record` at once."""
    from tqdm.auto import tqdm

    limiter = shared_limiter(rate_limit, roots)
    run = uuid.uuid4().hex  # this run's key for the limiter's progress counts
    task = ray.remote(fetch_artist).options(num_cpus=0, max_retries=2, scheduling_strategy="SPREAD")
    queue = deque(pending)
    in_flight: dict = {}
    bar = tqdm(total=n_total, initial=n_cached, unit="artist", desc="artists", disable=not progress,
               file=sys.stderr, mininterval=1.0, dynamic_ncols=True)
    try:
        while queue or in_flight:
            while queue and len(in_flight) < workers:
                spec = queue.popleft()
                ref = task.remote(spec, max_songs, token, roots, limiter, retries, backoff, timeout, run)
                in_flight[ref] = spec
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
            stats = ray.get(limiter.stats.remote(run))
            bar.set_postfix(songs=stats["songs"], req_s=f"{stats['requests'] / max(stats['seconds'], 1e-9):.1f}",
                            retries=stats["retries"], refresh=False)
            bar.update(0)  # redraws at most every `mininterval` seconds
    finally:
        bar.close()
        for ref in in_flight:
            ray.cancel(ref, force=True)
        limiter.forget.remote(run)


def scrape(
    artists: Sequence[str | ArtistSpec | dict],
    max_songs: int,
    out: str | os.PathLike,
    *,
    refresh: bool = False,
    workers: int = 8,
    rate_limit: float = 5.0,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 10.0,
    push_to_hub: str | None = None,
    parquet: bool = False,
    progress: bool = True,
) -> ScrapeReport:
    """Scrape `artists` (names, {name, id} dicts or ArtistSpecs) into the dataset directory `out`.

    Uses the Ray cluster already initialised, else RAY_ADDRESS's, else a local one. Returns the per-artist
    report; `report.exit_code` is EXIT_ARTISTS_FAILED when any artist failed (the others are still saved).
    """
    specs = _unique(a if isinstance(a, ArtistSpec) else parse_artist_entry(a, "artists") for a in artists)
    if not specs:
        raise LyricdistError("no artists given; name them (e.g. `lyricdist scrape ABBA Queen`) or pass --artists-file")
    if max_songs < 1:
        raise LyricdistError(f"--max-songs must be at least 1, got {max_songs}")
    if workers < 1:
        raise LyricdistError(f"--workers must be at least 1, got {workers}")
    if not rate_limit > 0:
        raise LyricdistError(f"--rate-limit must be a positive number of requests per second, got {rate_limit}")
    if retries < 0:
        raise LyricdistError(f"--retries must be 0 or more, got {retries}")
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
        cached = None if refresh else _load_record(raw_dir / spec.record_filename(), spec, max_songs)
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
        started_ray = _start_ray()
        try:
            _run_tasks(pending, max_songs, _Secret(token), roots, workers, rate_limit, retries, backoff, timeout,
                       on_record, progress, len(specs), len(specs) - len(pending))
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
            _push(out, push_to_hub)
    return report


DATASET_FEATURES = {
    "artist": "string",
    "artist_id": "int64",
    "title": "string",
    "song_id": "int64",
    "url": "string",
    "album": "string",
    "release_date": "string",
    "lyrics": "string",
    "lyrics_raw": "string",
    "n_chars": "int64",
}


def write_dataset(out: Path, rows: list[dict], report: ScrapeReport, parquet: bool = False,
                  progress: bool = True) -> None:
    """Replace `out` in one rename with the dataset, its card, optional parquet, and the raw records kept."""
    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        _save(out, rows, report, parquet)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def _save(out: Path, rows: list[dict], report: ScrapeReport, parquet: bool) -> None:
    import datasets

    features = datasets.Features({k: datasets.Value(v) for k, v in DATASET_FEATURES.items()})
    columns = {k: [row[k] for row in rows] for k in DATASET_FEATURES}
    dataset = datasets.DatasetDict({"train": datasets.Dataset.from_dict(columns, features=features)})
    with atomic_dir(out) as tmp:
        if (out / "raw").is_dir():
            shutil.copytree(out / "raw", tmp / "raw")
        dataset.save_to_disk(str(tmp))
        (tmp / "README.md").write_text(dataset_card(report), encoding="utf-8")
        if parquet:
            (tmp / "parquet").mkdir()
            dataset["train"].to_parquet(str(tmp / "parquet" / "train.parquet"))


def dataset_card(report: ScrapeReport) -> str:
    done = [r for r in report.results if r.status != "failed"]
    lines = [
        "---",
        "pretty_name: lyricdist Genius lyrics",
        "task_categories: [text-generation]",
        "tags: [lyrics, genius, lyricdist]",
        "---",
        "",
        "# Genius lyrics scraped by `lyricdist scrape`",
        "",
        f"{sum(r.songs for r in done)} songs by {len(done)} artists, one row per song (split `train`).",
        "Songs are the artists' most popular on Genius; non-songs, \"(Remix)\" and \"(Live)\" titles are skipped.",
        "`lyrics` is cleaned (Genius page junk and [Section] headers removed, re-releases de-duplicated by",
        "normalised title, empty lyrics dropped); `lyrics_raw` is the text lyricsgenius returned.",
        "Lyrics are copyrighted by their owners: use this dataset for research only.",
        "",
        "| artist | Genius name | songs | chars | empty dropped | duplicates dropped |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in done:
        cells = [c.replace("|", "\\|") for c in (r.name, r.artist)]
        lines.append(f"| {cells[0]} | {cells[1]} | {r.songs} | {r.chars} | {r.empty} | {r.duplicates} |")
    if report.failed:
        lines += ["", "Failed (not in the dataset): " + ", ".join(r.name for r in report.failed)]
    return "\n".join(lines) + "\n"


def _push(out: Path, repo: str) -> None:
    import datasets

    try:
        datasets.load_from_disk(str(out)).push_to_hub(repo)
    except Exception as e:
        raise LyricdistError(
            f"pushing {out} to the Hub as {repo!r} failed ({type(e).__name__}: {e}); log in with "
            "`huggingface-cli login` or set HF_TOKEN; the dataset on disk is complete"
        ) from None


# --------------------------------------------------------------------------------------------------------------
# CLI.
# --------------------------------------------------------------------------------------------------------------


def cli_parser():
    from .cli import new_parser

    p = new_parser(
        "Scrape Genius lyrics (one Ray task per artist) into a HuggingFace dataset. Needs GENIUS_ACCESS_TOKEN. "
        f"Exit code {EXIT_ARTISTS_FAILED} when any artist failed (the rest are saved; re-run to retry)."
    )
    p.add_argument("artists", nargs="*", default=[], help="artist names (quote names with spaces)")
    p.add_argument("--artists-file", type=str | None, default=None, help="YAML list, e.g. configs/artists/original-21.yaml")
    p.add_argument("--max-songs", type=int, required=True, help="most popular songs per artist")
    p.add_argument("--out", required=True, help="dataset directory (created; finished artists are reused)")
    p.add_argument("--refresh", action="store_true", help="scrape artists again even if already done")
    p.add_argument("--workers", type=int, default=8, help="artists scraped at once")
    p.add_argument("--rate-limit", type=float, default=5.0,
                   help="requests per second, shared by all workers and by other scrapes on the cluster")
    p.add_argument("--retries", type=int, default=5, help="retries per request on 429, 5xx and timeouts")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds before a request times out")
    p.add_argument("--push-to-hub", type=str | None, default=None, help="also push the dataset to this Hub repo")
    p.add_argument("--parquet", action="store_true", help="also write parquet/train.parquet")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def cli_run(parser, args) -> int:
    specs = [ArtistSpec(name) for name in args.artists]
    if args.artists_file:
        specs += load_artists_file(args.artists_file)
    report = scrape(
        specs,
        args.max_songs,
        args.out,
        refresh=args.refresh,
        workers=args.workers,
        rate_limit=args.rate_limit,
        retries=args.retries,
        timeout=args.timeout,
        push_to_hub=args.push_to_hub,
        parquet=args.parquet,
        progress=not args.no_progress,
    )
    from rich.console import Console

    Console(soft_wrap=False, width=160).print(report.table())
    if report.failed:
        print(
            f"lyricdist scrape: {len(report.failed)} of {len(report.results)} artists failed; "
            f"{'the rest are saved in ' + str(args.out) if report.dataset_written else 'nothing was written'}; "
            "re-run the same command to retry only the failed ones",
            file=sys.stderr,
        )
    return report.exit_code
