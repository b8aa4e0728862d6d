"""Cleaning rules for the text lyricsgenius returns: pure functions, no I/O.

Genius page junk leaks into the lyrics lyricsgenius scrapes ("N Contributors", "Translations" lists, the
"<Title> Lyrics" heading, "You might also like", ticket adverts, "NEmbed"); `clean_genius_lyrics` removes it with
the [Section] headers, and `clean_songs` turns one artist's raw songs into dataset rows (see `dataset.SCHEMA`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable

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


def clean_genius_lyrics(raw: str, title: str = "", artist: str = "") -> str:
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
        lyrics = clean_genius_lyrics(song.get("lyrics_raw") or "", song.get("title") or "", artist)
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
