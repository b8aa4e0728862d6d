"""Talking to Genius: lyricsgenius for the HTTP, plus what it lacks, and one artist's fetch (runs in a Ray task).

lyricsgenius raises AssertionError on a non-200 API answer, reads error and bot-challenge pages as songs without
lyrics and retries only timeouts. A requests adapter mounted on its session adds: a request-rate limit shared by
every task of every job in the cluster (`limiter.py`), and retries with exponential backoff and jitter (urllib3's
`Retry`) on 429 (waiting at least its Retry-After), 5xx, timeouts, connections dropped before or during the body,
and song pages that are not lyrics pages. Every request names lyricdist in its User-Agent.

Genius blocks many cloud IPs from its song pages (403, or a challenge page that says 200) while its API still
answers. A song whose page held no lyrics after every retry, or whose lyrics are empty, is kept in the artist's
record only as a placeholder; an artist fails when more than half of its fetched songs came back without lyrics,
with the reasons counted in its error (e.g. "song pages blocked (HTTP 403) x4: 4 of 4 songs without lyrics ...").
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from dataclasses import dataclass

import lyricsgenius
import requests
from lyricsgenius.utils import clean_str
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, MaxRetryError
from urllib3.util.retry import Retry

from ..errors import LyricdistError
from .artists import ArtistSpec
from .cleaning import clean_genius_lyrics
from .limiter import LimiterLease

TOKEN_ENV = "GENIUS_ACCESS_TOKEN"
ROOT_ENVS = {  # env var -> (lyricsgenius client attribute, default)
    "GENIUS_API_ROOT": ("API_ROOT", "https://api.genius.com/"),
    "GENIUS_PUBLIC_API_ROOT": ("PUBLIC_API_ROOT", "https://genius.com/api/"),
    "GENIUS_WEB_ROOT": ("WEB_ROOT", "https://genius.com/"),
}
EXCLUDED_TERMS = ["(Remix)", "(Live)"]  # on top of lyricsgenius's defaults (tracklist, skit, ...), matched literally
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
PAGE_GONE = frozenset({404, 410})
MAX_RETRY_AFTER = 300.0  # seconds; a longer Retry-After is cut short (retrying early then costs one attempt)
MAX_BACKOFF = 60.0
LYRICS_PAGE_MARKERS = (b"data-lyrics-container", b"__PRELOADED_STATE__")  # where lyricsgenius finds lyrics
RECORD_VERSION = 1


class GeniusUnavailable(Exception):
    """Genius kept answering 429/5xx or timing out after every retry."""


class NotALyricsPage(Exception):
    """A song page was still not a lyrics page after every retry; the message says why (it names no URL, so
    that an artist's reasons can be counted)."""


class ArtistBlocked(Exception):
    """More than half of an artist's --max_songs pages were unreadable: the artist fails whatever the rest say,
    so the remaining pages (each retried with backoff) are not fetched."""


class _Problem(Exception):
    """Why one attempt failed, as urllib3's Retry counts it."""


class Secret:
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


def user_agent() -> str:
    """Sent with every request, so that Genius can tell this tool's traffic from anonymous clients."""
    from importlib import metadata

    try:
        version = metadata.version("lyricdist")
    except metadata.PackageNotFoundError:  # a source checkout on PYTHONPATH
        from ..version import __version__ as version
    return f"lyricdist/{version} (Genius lyrics scraper for research) python-requests/{requests.__version__}"


def _retry_after(response: requests.Response) -> float:
    """Seconds Retry-After asks for (delta-seconds or an HTTP-date); 0 without a readable one, at most
    MAX_RETRY_AFTER."""
    value = response.headers.get("Retry-After")
    if value is None:
        return 0.0
    try:
        return min(MAX_RETRY_AFTER, float(Retry().parse_retry_after(value)))
    except (InvalidHeader, OverflowError, ValueError):
        return 0.0


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
    """Every attempt waits for a slot from the shared limiter; 429/5xx, timeouts, connections dropped before or
    during the body, and song pages that are not lyrics pages are retried as urllib3's `Retry` counts and backs
    off (exponential, jittered; urllib3's own retry loop cannot wait for the limiter or read the body)."""

    def __init__(self, limiter: LimiterLease, roots: dict[str, str], retries: int, backoff: float):
        super().__init__()
        self.limiter = limiter
        self.roots = roots
        self.backoff = backoff
        self.retry = Retry(total=retries, backoff_factor=backoff, backoff_jitter=backoff, backoff_max=MAX_BACKOFF)

    def send(self, request, **kwargs):
        is_page = is_song_page(request.url, self.roots)
        retry = self.retry
        while True:
            wait = self.limiter.acquire(retry=bool(retry.history))
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
                        self.limiter.pause(max(retry_after, self.backoff))
                else:
                    page_problem = problem = _page_problem(response) if is_page else None
                    if problem is None:
                        if is_page and response.status_code == 200:
                            self.limiter.song_fetched()
                        return response
                    if response.status_code in PAGE_GONE:  # a deleted page: no retry brings it back
                        response.close()
                        raise NotALyricsPage(page_problem)
                response.close()
            try:
                retry = retry.increment(request.method, request.url, error=_Problem(problem))
            except MaxRetryError:
                if page_problem:
                    raise NotALyricsPage(page_problem) from None
                where = request.url.split("?", 1)[0]
                raise GeniusUnavailable(f"{problem} on {where} after {len(retry.history) + 1} attempts") from None
            time.sleep(max(retry_after, retry.get_backoff_time()))


class Genius(lyricsgenius.Genius):
    """lyricsgenius's client pointed at `roots`, with our settings, an optional transport adapter, and song pages
    that are not lyrics pages noted in `unreadable` (URL -> why) instead of failing the whole artist.

    Once more than half of `max_songs` pages were unreadable the artist cannot pass (see `lyrics_failure`):
    ArtistBlocked stops it early. The class keeps lyricsgenius's name: lyricsgenius tells its full client from
    its public-API-only one by the class name.
    """

    def __init__(self, token: str, roots: dict[str, str], timeout: float = 10.0,
                 adapter: HTTPAdapter | None = None, max_songs: int | None = None):
        super().__init__(
            token,
            timeout=timeout,
            sleep_time=0,  # the shared rate limiter paces requests
            retries=0,  # PoliteAdapter retries
            remove_section_headers=False,  # clean_genius_lyrics removes them, so lyrics_raw keeps them
            skip_non_songs=True,
            excluded_terms=EXCLUDED_TERMS,
            user_agent=user_agent(),
        )
        for attr, url in roots.items():
            setattr(self, attr, url)  # instance attributes shadow lyricsgenius's class constants
        if adapter is not None:  # lyricsgenius has no public hook for its transport: mount on its session
            self._session.mount("http://", adapter)
            self._session.mount("https://", adapter)
        self.max_songs = max_songs
        self.unreadable: dict[str, str] = {}

    def lyrics(self, song_id=None, song_url=None, remove_section_headers=False):
        try:
            return super().lyrics(song_id=song_id, song_url=song_url, remove_section_headers=remove_section_headers)
        except NotALyricsPage as e:
            self.unreadable[song_url] = str(e)
            if self.max_songs and len(self.unreadable) * 2 > self.max_songs:
                raise ArtistBlocked() from None
            return None


def missing_lyrics(song: dict) -> str | None:
    """Why a record's song has no lyrics, or None (records saved before "missing" existed kept empty lyrics)."""
    if "missing" in song:
        return song["missing"]
    return None if clean_genius_lyrics(song.get("lyrics_raw") or "", song.get("title") or "") else "empty lyrics"


def lyrics_failure(songs: list[dict]) -> str | None:
    """Why the artist failed, when more than half of its fetched songs came back without lyrics: its data would
    be mostly holes, most likely from blocked song pages that a later run may get."""
    missing = [why for why in map(missing_lyrics, songs) if why]
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


@dataclass(frozen=True)
class FetchSettings:
    """What every artist's task needs, shipped once per task."""

    max_songs: int
    token: Secret
    roots: dict[str, str]
    limiter: LimiterLease
    retries: int = 5
    backoff: float = 1.0
    timeout: float = 10.0


def fetch_artist(spec: ArtistSpec, settings: FetchSettings) -> dict:
    """One artist's raw record: {"status": "done", songs...} or {"status": "failed", "error": ...}; never raises."""
    started = time.monotonic()
    max_songs = settings.max_songs
    base = {"version": RECORD_VERSION, "name": spec.name, "genius_id": spec.genius_id, "max_songs": max_songs}
    try:
        adapter = PoliteAdapter(settings.limiter, settings.roots, settings.retries, settings.backoff)
        genius = Genius(settings.token.reveal(), settings.roots, settings.timeout, adapter, max_songs)
        artist_id = spec.genius_id
        if artist_id is None:
            found = genius.search_artist(spec.name, max_songs=0, allow_name_change=True)
            if found is None:
                return {**base, "status": "failed", "error": f"no Genius artist matches {spec.name!r}; check the spelling"}
            artist_id = found.to_dict()["id"]
            if clean_str(found.name) != clean_str(spec.name):
                return {
                    **base,
                    "status": "failed",
                    "error": f"Genius search for {spec.name!r} found {found.name!r} (id {artist_id}); "
                    f"pin the right id in the artists file: {{name: {spec.name}, id: GENIUS_ID}}",
                }
        try:
            artist = genius.search_artist(spec.name, max_songs=max_songs, sort="popularity", artist_id=artist_id)
        except ArtistBlocked:
            placeholders = [{"missing": why} for why in genius.unreadable.values()]
            return {**base, "status": "failed", "error": lyrics_failure(placeholders) + "; stopped early"}
        if artist is None:
            return {**base, "status": "failed", "error": f"Genius has no artist with id {artist_id}"}
        songs = []
        for song in artist.songs:
            body = song.to_dict()
            entry = {
                "title": song.title,
                "song_id": int(body["id"]),
                "url": song.url,
                "album": (song.album or {}).get("name"),
                "release_date": body.get("release_date"),
                "lyrics_raw": song.lyrics or "",
            }
            why = genius.unreadable.get(song.url) or missing_lyrics(entry)
            if why:  # kept as a placeholder (for the counts and --max_songs order), never as data
                del entry["lyrics_raw"]
                entry["missing"] = why
            songs.append(entry)
        failure = lyrics_failure(songs)
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
        return {**base, "status": "failed", "error": _describe_error(e, settings.token.reveal())}
