"""Datasets written by `lyricdist scrape` (a `datasets.save_to_disk` directory): one Song per row."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..errors import LyricdistError
from ..genius.dataset import SONG_META_COLUMNS, TRAINING_COLUMNS
from .registry import Song, register_source


def is_saved_dataset(spec: str) -> bool:
    path = Path(spec)
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file())


class GeniusDatasetSource:
    """`lyricdist prepare DATASET_DIR`: the cleaned `lyrics` column, every split, in row order."""

    kind = "songs"
    default_lowercase = True

    def __init__(self, path: str, **_: object):
        self.path = Path(path)
        self.name = f"genius:{self.path}"
        if not is_saved_dataset(path):
            raise LyricdistError(f"{path!r} is not a dataset directory written by `lyricdist scrape`")

    def _splits(self):
        import datasets

        try:
            loaded = datasets.load_from_disk(str(self.path))
        except Exception as e:  # datasets raises several types for a damaged directory
            raise LyricdistError(f"cannot read the dataset in {self.path} ({type(e).__name__}: {e}); re-run scrape") from None
        splits = list(loaded.values()) if isinstance(loaded, datasets.DatasetDict) else [loaded]
        for split in splits:
            missing = [c for c in TRAINING_COLUMNS if c not in split.column_names]
            if missing:
                raise LyricdistError(
                    f"dataset {self.path} lacks column(s) {missing}; it was not written by `lyricdist scrape`"
                )
        return splits

    def songs(self) -> Iterator[Song]:
        for split in self._splits():
            for row in split:
                text = row["lyrics"] or ""
                meta = {k: row[k] for k in SONG_META_COLUMNS if k in row}
                yield Song(text=text if text.endswith("\n") or not text else text + "\n", artist=row["artist"],
                           title=row["title"], meta=meta)


register_source("genius", is_saved_dataset, GeniusDatasetSource)
