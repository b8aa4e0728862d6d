"""The source registry: the Song record, the options some sources take, and `register_source` / `open_source`.
Source modules register themselves here; the package (lyricdist.sources) loads the built-in ones on first use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from ..errors import LyricdistError


@dataclass
class Song:
    text: str
    artist: str = ""
    title: str = ""
    meta: dict = field(default_factory=dict)


def source_options(
    script: Literal["roman", "itrans", "devanagari"] | None = None,
    artist_field: Literal["lyricist", "singer", "music", "film"] | None = None,
    artist_column: str = "artist",
    lyrics_column: str = "lyrics",
    title_column: str = "title",
) -> dict:
    """Options that some sources take (the others ignore them), as `open_source` keywords.

    Args:
        script: giitaayan output script: roman, itrans or devanagari (default: roman)
        artist_field: giitaayan: the artist from this metadata field (default: every song by `giitaayan`)
        artist_column: hf:/parquet sources: the artist column
        lyrics_column: hf:/parquet sources: the lyrics column
        title_column: hf:/parquet sources: the title column (if present)
    """
    return {k: v for k, v in locals().items() if v is not None}


@dataclass
class _Entry:
    name: str
    detect: Callable[[str], bool]
    factory: Callable[..., object]
    fallback: bool


_REGISTRY: list[_Entry] = []


def register_source(
    name: str, detect: Callable[[str], bool], factory: Callable[..., object], fallback: bool = False
) -> None:
    """Register a source kind. Fallback kinds (plain text) are tried only after every specific kind."""
    _REGISTRY.append(_Entry(name, detect, factory, fallback))
    _REGISTRY.sort(key=lambda e: e.fallback)


def source_kinds() -> list[str]:
    return [e.name for e in _REGISTRY]


def open_source(spec: str, **options):
    """Turn one SOURCE argument into a source object."""
    if ":" in spec and not Path(spec).exists():
        kind, _, rest = spec.partition(":")
        for entry in _REGISTRY:
            if entry.name == kind:
                return entry.factory(rest, **options)
    for entry in _REGISTRY:
        if entry.detect(spec):
            return entry.factory(spec, **options)
    if not Path(spec).exists():
        raise LyricdistError(f"source {spec!r} does not exist; give a text file, a corpus directory or 'demo'")
    raise LyricdistError(
        f"don't know how to read {spec!r}; prefix it with one of {', '.join(k + ':' for k in source_kinds())}"
    )
