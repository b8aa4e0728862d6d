"""A fake Genius service on 127.0.0.1: real HTTP, so the real lyricsgenius code path runs against it.

It serves what lyricsgenius calls for `search_artist`: the public search (`search/multi`), the API's
`artists/ID`, `artists/ID/songs` and `songs/ID`, and the lyric HTML pages, with Genius junk (contributor
counts, translation lists, "You might also like", ticket lines, "NEmbed") leaking into the lyrics the way it
does on real pages. Song URLs are canonical `https://genius.com/...` URLs, as the real API returns them.

Usage (also from a `ray job submit` test: the service runs in the test process, clients reach it over HTTP):

    with FakeGenius(catalogue()) as fake:        # or fake = FakeGenius(...).start(); ...; fake.stop()
        env = fake.env                            # GENIUS_API_ROOT, GENIUS_PUBLIC_API_ROOT, GENIUS_WEB_ROOT,
                                                  # GENIUS_ACCESS_TOKEN (== FAKE_TOKEN)
        fake.inject(path="/web/", status=429, times=2)   # next 2 lyric pages answer 429
        fake.inject(path="songs/", delay=2.0)            # next song request answers after 2 s
        fake.inject(path="/web/", cut_body=1.0)          # next lyric page sends half its body, stalls 1 s, hangs up
        fake.inject(path="artists/102", status=500, times=None)  # that artist is always broken
        fake.misdirect("Queen", to="Queen Latifah")      # search for "Queen" finds only Queen Latifah
        fake.block_pages("DJ Kilowatt", status=403)      # its lyric pages answer 403 (the API still works)
        fake.block_pages("DJ Kilowatt", status=200, titles={"Alive"})  # that page is a lyrics-less challenge
        fake.latency = 0.05                              # every answer takes 50 ms
        fake.request_count("/web/")                      # requests served so far whose path contains that
        fake.request_times()                             # their arrival times (time.monotonic())
        fake.request_headers("/web/")                    # their headers (dicts)

API requests without `Authorization: Bearer FAKE_TOKEN` get 401. `artists/ID/songs` lists songs by title, as
Genius does, unless asked for `sort=popularity` (FakeSong.popularity, highest first).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

from local_server import LocalServer

FAKE_TOKEN = "fake-genius-token-5f3c9a1e7d"


@dataclass
class FakeSong:
    id: int
    title: str
    lines: list[str]  # lyric body; "[Chorus]" style lines are section headers
    album: str | None = "Fake Album"
    release_date: str | None = "2011-03-04"
    lyrics_state: str = "complete"
    junk: bool = True  # leak Genius page junk into the lyrics container
    popularity: int = 0  # order of `sort=popularity` (highest first)


@dataclass
class FakeArtist:
    id: int
    name: str
    songs: list[FakeSong] = field(default_factory=list)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").capitalize() or "x"


def catalogue() -> list[FakeArtist]:
    """Artists exercising the cleaning rules, lyricsgenius's filters, dedupe and awkward names."""
    juniper = FakeArtist(
        101,
        "Juniper Vale",
        [
            FakeSong(1001, "Lanterns", ["[Verse 1]", "Lanterns on the water", "carry us home", "",
                                       "[Chorus]", "Oh the light, oh the light"], popularity=800),
            FakeSong(1002, "Paper Boats", ["[Intro]", "Fold the morning into paper boats", "",
                                          "[Verse 1]", "send them down the river"], popularity=700),
            FakeSong(1003, "Lanterns (Remastered 2011)", ["Lanterns on the water, remastered"], popularity=600),
            FakeSong(1004, "Paper Boats (Remix)", ["remix line"], popularity=500),
            FakeSong(1005, "Juniper Vale Tracklist", ["1. Lanterns", "2. Paper Boats"], popularity=400),
            FakeSong(1006, "Hollow Hymn", [], junk=False, popularity=300),
            FakeSong(1007, "Unreleased Thing", ["never out"], lyrics_state="unreleased", popularity=200),
            FakeSong(1008, "Quiet Fields", ["Quiet fields and quiet hearts", "we were young"], album=None,
                     release_date=None, popularity=900),
        ],
    )
    kilowatt = FakeArtist(
        102,
        "DJ Kilowatt",
        [
            FakeSong(2001, "Voltage", ["[Hook]", "Turn the voltage up", "up up"], popularity=900),
            FakeSong(2002, "Grid Down (Live)", ["live crowd noise"], popularity=100),
            FakeSong(2003, "Short Circuit", ["Short circuit in my heart", "sparks all night"], popularity=800),
            FakeSong(2004, "Alive", ["Still alive", "after the blackout"], popularity=850),  # not "(Live)"
        ],
    )
    queen = FakeArtist(103, "Queen", [FakeSong(3001, "Crown Song", ["We wear the crown", "all night long"])])
    latifah = FakeArtist(104, "Queen Latifah", [FakeSong(4001, "Other Crown", ["Not the band", "at all"])])
    acdc = FakeArtist(105, "AC/DC", [FakeSong(5001, "High Voltage Fake", ["High voltage fake", "rock"])])
    dotdot = FakeArtist(106, "../x", [FakeSong(6001, "Escape", ["Trying to escape", "the output dir"])])
    return [juniper, kilowatt, queen, latifah, acdc, dotdot]


def bulk_catalogue(n_artists: int, n_songs: int, first_id: int = 1000) -> list[FakeArtist]:
    """Plain artists for benchmarks: `n_songs` distinct junk-bearing songs each."""
    artists = []
    for a in range(n_artists):
        aid = first_id + a
        songs = [
            FakeSong(aid * 1000 + s, f"Song {s} of {aid}", [f"[Verse {s}]", f"line {s} of artist {aid}", "la la"])
            for s in range(n_songs)
        ]
        artists.append(FakeArtist(aid, f"Bench Artist {a}", songs))
    return artists


def _clean(text: str) -> str:
    return re.sub(r"[^\w]", "", text).casefold()


def _artist_body(artist: FakeArtist) -> dict:
    return {
        "id": artist.id,
        "name": artist.name,
        "url": f"https://genius.com/artists/{slug(artist.name)}",
        "api_path": f"/artists/{artist.id}",
        "header_image_url": "https://images.example/h.png",
        "image_url": "https://images.example/i.png",
        "is_meme_verified": False,
        "is_verified": False,
    }


def _song_path(artist: FakeArtist, song: FakeSong) -> str:
    return f"/{slug(artist.name)}-{slug(song.title).lower()}-lyrics"


def _song_body(artist: FakeArtist, song: FakeSong, full: bool) -> dict:
    body = {
        "id": song.id,
        "title": song.title,
        "full_title": f"{song.title} by {artist.name}",
        "path": _song_path(artist, song),
        "url": "https://genius.com" + _song_path(artist, song),
        "api_path": f"/songs/{song.id}",
        "lyrics_state": song.lyrics_state,
        "instrumental": False,
        "primary_artist": _artist_body(artist),
        "featured_artists": [],
    }
    if full:
        body["album"] = {"id": 9, "name": song.album} if song.album else None
        body["release_date"] = song.release_date
    return body


def lyrics_page(artist: FakeArtist, song: FakeSong) -> str:
    """A song page shaped like genius.com's: lyric containers with junk that survives lyricsgenius's parser."""
    lines = [line.replace("&", "&amp;").replace("<", "&lt;") for line in song.lines]
    if not song.junk:
        body = "<br/>".join(lines)
        return f'<html><body><div data-lyrics-container="true">{body}</div></body></html>'
    half = max(1, len(lines) // 2)
    first = "<br/>".join(lines[:half])
    second = "<br/>".join(lines[half:])
    header = (
        f"{len(song.lines) + 40} Contributors<span>Translations</span><span>Español</span><span>Français</span>"
        f"{song.title} Lyrics"
    )
    return (
        "<html><head><title>Genius</title></head><body>"
        '<div class="SongHeader">Not lyrics</div>'
        f'<div data-lyrics-container="true" class="Lyrics__Container-sc-1">{header}'
        '<div data-exclude-from-selection="true">Advertisement</div>'
        f"{first}</div>"
        f'<div data-lyrics-container="true" class="Lyrics__Container-sc-1">You might also like<br/>'
        f"{second}<br/>See {artist.name} LiveGet tickets as low as $45<br/>{song.id % 97}Embed</div>"
        "</body></html>"
    )


CHALLENGE_PAGE = (  # what a bot wall sends instead of the song: no lyrics container, no embedded song state
    "<html><head><title>Just a moment...</title></head><body><h1>Checking your browser</h1>"
    "<p>Enable JavaScript and cookies to continue</p></body></html>"
)


@dataclass
class _Fault:
    path: str
    status: int | None
    delay: float
    times: int | None
    cut_body: float | None = None


class FakeGenius(LocalServer):
    """The service. `start()` binds a free port on 127.0.0.1 and serves from a daemon thread (tests/local_server)."""

    def __init__(self, artists: list[FakeArtist] | None = None, latency: float = 0.0):
        super().__init__()
        self.artists = {a.id: a for a in (artists if artists is not None else catalogue())}
        self.latency = latency
        self._faults: list[_Fault] = []
        self._misdirect: dict[str, str] = {}
        self._blocked: dict[str, tuple[int, set[str] | None]] = {}  # artist name -> (status, titles or all)

    @property
    def base_url(self) -> str:
        return self.url

    @property
    def env(self) -> dict[str, str]:
        """Environment for a scrape against this service (includes the fake token)."""
        return {
            "GENIUS_API_ROOT": f"{self.base_url}/api/",
            "GENIUS_PUBLIC_API_ROOT": f"{self.base_url}/public/",
            "GENIUS_WEB_ROOT": f"{self.base_url}/web/",
            "GENIUS_ACCESS_TOKEN": FAKE_TOKEN,
        }

    # switches --------------------------------------------------------------------------------------------
    def inject(self, path: str = "", status: int | None = None, delay: float = 0.0, times: int | None = 1,
               cut_body: float | None = None) -> None:
        """The next `times` requests (None: all) whose path contains `path` wait `delay` s, then answer
        `status` instead of the real answer (None: the real answer, only late). With `cut_body`, the answer's
        headers and half its body are sent, then the server stalls `cut_body` s and hangs up (0: at once)."""
        with self._lock:
            self._faults.append(_Fault(path, status, delay, times, cut_body))

    def misdirect(self, query: str, to: str) -> None:
        """Searching for `query` finds only the artist named `to` (name search matching the wrong artist)."""
        self._misdirect[_clean(query)] = to

    def block_pages(self, artist: str, status: int = 403, titles: set[str] | None = None) -> None:
        """Until `clear()`, the lyric pages of `artist`'s songs (only `titles`, if given) answer `status` with a
        bot-wall page without lyrics, as Genius does to many cloud IPs while its API still answers; 200 is the
        challenge page that looks like success."""
        self._blocked[artist] = (status, titles)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()
        self._misdirect.clear()
        self._blocked.clear()

    def request_count(self, contains: str = "") -> int:
        with self._lock:
            return sum(1 for r in self.requests if contains in r["path"])

    def request_times(self, contains: str = "") -> list[float]:
        with self._lock:
            return [r["time"] for r in self.requests if contains in r["path"]]

    def request_headers(self, contains: str = "") -> list[dict[str, str]]:
        """Headers as sent (lower-case names)."""
        with self._lock:
            return [dict(r["headers"]) for r in self.requests if contains in r["path"]]

    # serving ---------------------------------------------------------------------------------------------
    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path in path and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def handle(self, req: BaseHTTPRequestHandler, request: dict) -> None:
        query = {k: v[0] for k, v in parse_qs(request["query"]).items()}
        path = request["path"]
        fault = self._take_fault(path)
        delay = self.latency + (fault.delay if fault else 0.0)
        if delay:
            time.sleep(delay)
        if fault and fault.status:
            self._reply(req, fault.status, {"meta": {"status": fault.status, "message": "injected"}},
                       headers={"Retry-After": "0"} if fault.status == 429 else None)
            return
        try:
            status, payload = self._route(path, query, req.headers.get("Authorization", ""))
        except (KeyError, ValueError):
            status, payload = 404, {"meta": {"status": 404, "message": "Not found"}}
        self._reply(req, status, payload, cut_body=fault.cut_body if fault else None)

    def _route(self, path: str, query: dict, auth: str) -> tuple[int, object]:
        if path.startswith("/web/"):
            for artist in self.artists.values():
                for song in artist.songs:
                    if _song_path(artist, song) == "/" + path[len("/web/"):]:
                        status, titles = self._blocked.get(artist.name, (None, None))
                        if status is not None and (titles is None or song.title in titles):
                            return status, CHALLENGE_PAGE
                        return 200, lyrics_page(artist, song)
            return 404, "<html><body>Page not found</body></html>"
        if path.startswith("/public/search/multi"):
            return 200, {"response": {"sections": self._search(query.get("q", ""))}}
        if path.startswith("/api/"):
            if auth != f"Bearer {FAKE_TOKEN}":
                return 401, {"meta": {"status": 401, "message": "invalid token"}}
            parts = path[len("/api/"):].strip("/").split("/")
            if parts[0] == "artists" and len(parts) == 2:
                return 200, {"response": {"artist": _artist_body(self.artists[int(parts[1])])}}
            if parts[0] == "artists" and len(parts) == 3 and parts[2] == "songs":
                return 200, {"response": self._artist_songs(self.artists[int(parts[1])], query)}
            if parts[0] == "songs" and len(parts) == 2:
                for artist in self.artists.values():
                    for song in artist.songs:
                        if song.id == int(parts[1]):
                            return 200, {"response": {"song": _song_body(artist, song, full=True)}}
        return 404, {"meta": {"status": 404, "message": "Not found"}}

    def _search(self, q: str) -> list[dict]:
        wanted = _clean(q)
        if wanted in self._misdirect:
            names = {_clean(self._misdirect[wanted])}
            found = [a for a in self.artists.values() if _clean(a.name) in names]
        else:
            found = sorted(
                (a for a in self.artists.values() if wanted and wanted in _clean(a.name)),
                key=lambda a: _clean(a.name) != wanted,
            )
        hits = [{"index": "artist", "type": "artist", "result": _artist_body(a)} for a in found]
        return [
            {"type": "top_hit", "hits": hits[:1]},
            {"type": "song", "hits": []},
            {"type": "artist", "hits": hits},
        ]

    def _artist_songs(self, artist: FakeArtist, query: dict) -> dict:
        per_page = int(query.get("per_page") or 20)
        page = int(query.get("page") or 1)
        if query.get("sort") == "popularity":
            songs = sorted(artist.songs, key=lambda s: -s.popularity)
        else:
            songs = sorted(artist.songs, key=lambda s: s.title.casefold())
        chunk = songs[(page - 1) * per_page : page * per_page]
        more = page * per_page < len(songs)
        return {"songs": [_song_body(artist, s, full=False) for s in chunk], "next_page": page + 1 if more else None}

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, status: int, payload: object, headers: dict | None = None,
              cut_body: float | None = None) -> None:
        if isinstance(payload, str):
            body, ctype = payload.encode(), "text/html; charset=utf-8"
        else:
            body, ctype = json.dumps(payload).encode(), "application/json"
        try:
            req.send_response(status)
            req.send_header("Content-Type", ctype)
            req.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                req.send_header(key, value)
            req.end_headers()
            if cut_body is None:
                req.wfile.write(body)
                return
            req.wfile.write(body[: len(body) // 2])
            req.wfile.flush()
            time.sleep(cut_body)
            req.close_connection = True  # the client gets fewer bytes than Content-Length promised
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            pass
