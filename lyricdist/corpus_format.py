"""The prepared corpus on disk (meta.json + vocab.json + token arrays): written by `prepare`, read by `data`. Its
own module so that the reader does not import the writer's CLI."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import LyricdistError

CORPUS_FORMAT = "lyricdist-corpus"
CORPUS_VERSION = 1  # raise when the layout changes; readers refuse a version they do not know


def read_meta(corpus_dir: str | Path) -> dict:
    """A corpus's meta.json, checked to be a lyricdist corpus of a version this reader knows."""
    path = Path(corpus_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LyricdistError(
            f"{corpus_dir} is not a prepared corpus (no meta.json); run `lyricdist prepare SOURCE --out {corpus_dir}`"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LyricdistError(f"{path} is corrupted; re-run `lyricdist prepare`") from None
    if meta.get("format") != CORPUS_FORMAT:
        raise LyricdistError(f"{corpus_dir} is not a lyricdist corpus; run `lyricdist prepare` first")
    if meta.get("version", CORPUS_VERSION) > CORPUS_VERSION:
        raise LyricdistError(f"{corpus_dir} was prepared by a newer lyricdist (corpus version {meta['version']}, this "
                             f"one reads {CORPUS_VERSION}); upgrade lyricdist or re-run `lyricdist prepare`")
    return meta
