"""Which artists to scrape: names, or names with a pinned Genius id, from the command line or a YAML file."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import LyricdistError


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


def unique_artists(specs: Iterable[ArtistSpec]) -> list[ArtistSpec]:
    seen: set[tuple[str, int | None]] = set()
    out = []
    for spec in specs:
        key = (spec.name.casefold(), spec.genius_id)
        if key not in seen:
            seen.add(key)
            out.append(spec)
    return out
