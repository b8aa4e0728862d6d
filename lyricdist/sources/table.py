"""Tables of songs: a Hugging Face Hub dataset (`hf:USER/DATASET[@REVISION][:SPLIT]`) or a parquet file.

Any table with an artist column and a lyrics column will do (their names are options: --artist_column,
--lyrics_column; a title column is used when present). The Hub dataset is read with `datasets.load_dataset`,
so every format the Hub serves works and downloads are cached; a parquet file is read in record batches.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import LyricdistError
from .registry import Song, register_source

_HUB_SPEC = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(@(?P<rev>[^:@]+))?(:(?P<split>[\w.-]+))?$")


class _Columns:
    def __init__(self, artist_column: str = "artist", lyrics_column: str = "lyrics", title_column: str = "title"):
        self.artist, self.lyrics, self.title = artist_column, lyrics_column, title_column

    def check(self, names: Iterable[str], where: str) -> list[str]:
        """The columns to read from a table with columns `names`; a missing artist or lyrics column is an error."""
        names = list(names)
        for role, column in (("artist", self.artist), ("lyrics", self.lyrics)):
            if column not in names:
                raise LyricdistError(f"{where} has no {role} column {column!r} (its columns: {', '.join(names)}); "
                                     f"name it with --{role}_column")
        return [self.artist, self.lyrics] + ([self.title] if self.title in names else [])

    def songs(self, rows: Iterable[dict]) -> Iterator[Song]:
        for row in rows:
            text = row.get(self.lyrics) or ""
            yield Song(text=text if text.endswith("\n") or not text else text + "\n",
                       artist=str(row.get(self.artist) or ""), title=str(row.get(self.title) or ""))


class HubDatasetSource:
    """`prepare hf:USER/DATASET[@REVISION][:SPLIT]`: every split unless one is named, in row order."""

    kind = "songs"
    default_lowercase = True

    def __init__(self, spec: str, artist_column: str = "artist", lyrics_column: str = "lyrics",
                 title_column: str = "title", **_: object):
        m = _HUB_SPEC.match(spec)
        if not m:
            raise LyricdistError(f"hf:{spec} is not a Hub dataset reference; write hf:USER/DATASET or "
                                 f"hf:USER/DATASET:SPLIT")
        self.repo_id, self.revision, self.split = m["repo"], m["rev"], m["split"]
        self.name = f"hf:{spec}"
        self.columns = _Columns(artist_column, lyrics_column, title_column)

    def _splits(self):
        import datasets
        from datasets.exceptions import DatasetNotFoundError

        try:
            loaded = datasets.load_dataset(self.repo_id, split=self.split, revision=self.revision)
        except DatasetNotFoundError:
            raise LyricdistError(f"{self.name}: no such dataset on the Hub, or it is private: check the id, or log "
                                 f"in with `hf auth login` (or set HF_TOKEN)") from None
        except ValueError as e:
            if "split" in str(e).lower():
                raise LyricdistError(f"{self.name}: {str(e).strip().splitlines()[0]}; name one of its splits after "
                                     f"a colon, or none for all") from None
            raise
        except ConnectionError as e:
            raise LyricdistError(f"{self.name}: the Hub cannot be reached and the dataset is not cached ({e})") from None
        splits = list(loaded.values()) if isinstance(loaded, datasets.DatasetDict) else [loaded]
        for split in splits:
            self.columns.check(split.column_names, self.name)
        return splits

    def songs(self) -> Iterator[Song]:
        for split in self._splits():
            wanted = self.columns.check(split.column_names, self.name)
            yield from self.columns.songs(split.select_columns(wanted))


class ParquetSource:
    """`prepare path/to/train.parquet` (e.g. the project's own parquet export), read in record batches."""

    kind = "songs"
    default_lowercase = True

    def __init__(self, path: str, artist_column: str = "artist", lyrics_column: str = "lyrics",
                 title_column: str = "title", **_: object):
        self.path = Path(path)
        self.name = f"parquet:{self.path}"
        self.columns = _Columns(artist_column, lyrics_column, title_column)
        if not self.path.is_file():
            raise LyricdistError(f"parquet file {str(self.path)!r} does not exist")

    def songs(self) -> Iterator[Song]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as e:
            raise LyricdistError(f"{self.path} is not a readable parquet file ({e})") from None
        wanted = self.columns.check(table.schema_arrow.names, str(self.path))
        for batch in table.iter_batches(columns=wanted, batch_size=4096):
            yield from self.columns.songs(batch.to_pylist())


def is_parquet(spec: str) -> bool:
    return spec.lower().endswith(".parquet") and Path(spec).is_file()


register_source("hf", lambda spec: False, HubDatasetSource)  # only as `hf:...`
register_source("parquet", is_parquet, ParquetSource)
