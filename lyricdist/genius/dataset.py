"""The scraped dataset: its schema (the one definition, also read by the `prepare` source), how it is written,
its dataset card, and the push to the Hugging Face Hub.

Layout of OUT: dataset_dict.json + train/ (`datasets.load_from_disk(OUT)`), README.md (the dataset card, with
per-artist counts), raw/ (one JSON per artist: uncleaned lyrics and metadata, the resume state),
parquet/train.parquet with --parquet true.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from ..errors import LyricdistError
from ..fileio import atomic_dir
from .report import ScrapeReport

SCHEMA = {  # column -> `datasets.Value` dtype, one row per song
    "artist": "string",
    "artist_id": "int64",
    "title": "string",
    "song_id": "int64",
    "url": "string",
    "album": "string",
    "release_date": "string",
    "lyrics": "string",  # cleaned (cleaning.clean_genius_lyrics)
    "lyrics_raw": "string",  # as lyricsgenius returned it
    "n_chars": "int64",
}
TRAINING_COLUMNS = ("artist", "title", "lyrics")  # what `lyricdist prepare` needs from a scraped dataset
SONG_META_COLUMNS = ("song_id", "url")  # what it keeps with each song, when present
HUB_DATA_FILE = "data/train-00000-of-00001.parquet"  # a name the Hub reads as split `train` without a config
LOGIN_HINT = "log in with `hf auth login` or set HF_TOKEN"


def write_dataset(out: Path, rows: list[dict], report: ScrapeReport, parquet: bool = False,
                  progress: bool = True) -> None:
    """Replace `out` in one rename with the dataset, its card, optional parquet, and the raw records kept."""
    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        features = datasets.Features({k: datasets.Value(v) for k, v in SCHEMA.items()})
        columns = {k: [row[k] for row in rows] for k in SCHEMA}
        dataset = datasets.DatasetDict({"train": datasets.Dataset.from_dict(columns, features=features)})
        with atomic_dir(out) as tmp:
            if (out / "raw").is_dir():
                shutil.copytree(out / "raw", tmp / "raw")
            dataset.save_to_disk(str(tmp))
            (tmp / "README.md").write_text(dataset_card(report), encoding="utf-8")
            if parquet:
                (tmp / "parquet").mkdir()
                dataset["train"].to_parquet(str(tmp / "parquet" / "train.parquet"))
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


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


def push_to_hub(out: Path, repo_id: str, visibility: str = "private") -> None:
    """Upload the dataset in `out` as parquet, with the card this scrape wrote (`out`/README.md), in one commit to
    the Hub dataset repo `repo_id`, created with `visibility` (private or public; an existing repo keeps its own).

    The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT points at another Hub.
    """
    import datasets
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)  # read now: huggingface_hub reads it at import
    try:
        api.create_repo(repo_id, repo_type="dataset", private=visibility != "public", exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            parquet = Path(tmp) / "train.parquet"
            datasets.load_from_disk(str(out))["train"].to_parquet(str(parquet))
            api.create_commit(
                repo_id,
                repo_type="dataset",
                operations=[CommitOperationAdd(HUB_DATA_FILE, str(parquet)),
                            CommitOperationAdd("README.md", str(out / "README.md"))],
                commit_message="Upload lyrics scraped by `lyricdist scrape`",
            )
    except Exception as e:  # huggingface_hub raises several types (HTTP, auth, validation)
        raise LyricdistError(
            f"pushing {out} to the Hub as {repo_id!r} failed ({type(e).__name__}: {' '.join(str(e).split())}); "
            f"{LOGIN_HINT}; "
            "the dataset on disk is complete"
        ) from None
