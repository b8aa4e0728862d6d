"""Corpus sources for `lyricdist prepare`.

A source is either a collection of songs (kind "songs": `songs()` yields Song; split into train/validation by
whole song) or one continuous text (kind "text": `chunks()` yields str in bounded memory; char-rnn's input.txt,
whose validation is its last fraction); both have `name` and `default_lowercase`. Kinds: text files, `demo`, scraped dataset directories,
giitaayan files, Hub datasets (`hf:USER/DATASET[:SPLIT]`), parquet files and public corpora fetched by name
(`tinyshakespeare`, `giitaayan`: lyricdist.sources.public). New sources register themselves with
`register_source`; `open_source` picks the first whose `detect` accepts the argument, or the one named by a
`kind:` prefix (`text:notes.txt`, `demo:`).
"""

from __future__ import annotations

from .registry import Song, register_source, source_kinds, source_options  # noqa: F401  (the package's face)
from .registry import open_source as _open_source


def open_source(spec: str, **options):
    """Turn one SOURCE argument into a source object (the built-in kinds registered first)."""
    _load_builtin_sources()
    return _open_source(spec, **options)


_LOADED = False


def _load_builtin_sources() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from . import demo, table, text  # noqa: F401  (registration side effect)
    import importlib

    for optional in ("genius", "giitaayan", "public"):
        try:
            importlib.import_module(f"{__name__}.{optional}")
        except ModuleNotFoundError as e:  # source module not present in this build
            if e.name != f"{__name__}.{optional}":
                raise
