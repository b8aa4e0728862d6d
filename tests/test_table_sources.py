"""`prepare hf:USER/DATASET[:SPLIT]` (through `datasets`, against the fake Hub on 127.0.0.1) and `prepare X.parquet`,
with overridable column names."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from fake_hf import FakeHub, Repo

TRAIN = {"singer": ["Ada Lune", "Bo Vance", "Ada Lune"],
         "text": ["moonlight on the water\nsing it low\n", "engine roar\nhighway more\n", "silver tide\nstay beside\n"],
         "name": ["Moon", "Road", "Tide"]}
TEST = {"singer": ["Cy Mars"], "text": ["red dust rising\n"], "name": ["Dust"]}


def _parquet(columns: dict) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def _meta(out: Path) -> dict:
    return json.loads((out / "meta.json").read_text())


def _train_text(out: Path) -> str:
    vocab = json.loads((out / "vocab.json").read_text())
    import numpy as np

    meta = _meta(out)
    ids = np.fromfile(out / "train.bin", dtype=meta["dtype"])
    chars = vocab["chars"] if isinstance(vocab, dict) else vocab
    return "".join(chars[i] for i in ids)


@pytest.fixture
def hub(tmp_path):
    with FakeHub() as hub:
        hub.datasets["me/songs"] = Repo(private=False)
        hub.add_commit("me/songs", {"data/train-00000-of-00001.parquet": _parquet(TRAIN),
                                    "data/test-00000-of-00001.parquet": _parquet(TEST)}, dataset=True)
        hub.env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
                   "HF_HOME": str(tmp_path / "hf-home"), "HF_TOKEN": "hf_fake", "HF_HUB_DISABLE_TELEMETRY": "1",
                   "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
        yield hub


def test_prepare_hub_dataset_split_with_renamed_columns(hub, tmp_path):
    out = tmp_path / "corpus"
    run_cli("prepare", "hf:me/songs:train", "--artist_column", "singer", "--lyrics_column", "text",
            "--title_column", "name", "--val_fraction", "0", "--out", str(out), env=hub.env)
    meta = _meta(out)
    assert sorted(meta["artists"]) == ["Ada Lune", "Bo Vance"]  # only the train split
    assert meta["songs_per_artist"] == {"Ada Lune": 2, "Bo Vance": 1}
    assert meta["sources"][0]["source"] == "hf:me/songs:train" and meta["sources"][0]["songs"] == 3
    assert sorted(_train_text(out).splitlines()) == sorted("".join(TRAIN["text"]).splitlines())
    assert any("/resolve/" in r["path"] and r["path"].endswith(".parquet") for r in hub.requests)


def test_prepare_hub_dataset_reads_every_split_by_default(hub, tmp_path):
    out = tmp_path / "corpus"
    run_cli("prepare", "hf:me/songs", "--artist_column", "singer", "--lyrics_column", "text", "--out", str(out),
            env=hub.env)
    assert sorted(_meta(out)["artists"]) == ["Ada Lune", "Bo Vance", "Cy Mars"]


@pytest.mark.parametrize("args, message", [
    (["hf:me/songs"], "has no artist column 'artist' (its columns: singer, text, name); name it with --artist_column"),
    (["hf:me/absent", "--artist_column", "singer", "--lyrics_column", "text"], "no such dataset on the Hub"),
    (["hf:me/songs:validation", "--artist_column", "singer", "--lyrics_column", "text"], "name one of its splits"),
])
def test_bad_hub_datasets_are_one_line_errors(hub, tmp_path, args, message):
    out = tmp_path / "corpus"
    proc = run_cli("prepare", *args, "--out", str(out), env=hub.env, check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not out.exists()


def test_prepare_the_projects_parquet_export(tmp_path):
    """The columns `lyricdist scrape --parquet` writes (OUT/parquet/train.parquet) need no options."""
    import datasets

    from lyricdist.genius.dataset import SCHEMA as DATASET_FEATURES

    rows = {k: [] for k in DATASET_FEATURES}
    for artist, title, lyrics in (("Juniper Vale", "Ferns", "green ferns unfold"), ("DJ Kilowatt", "Volt", "turn it up"),
                                  ("Juniper Vale", "Moss", "soft moss grows")):
        for k, v in DATASET_FEATURES.items():
            rows[k].append({"artist": artist, "title": title, "lyrics": lyrics}.get(k, 0 if "int" in v else ""))
    path = tmp_path / "parquet" / "train.parquet"
    path.parent.mkdir()
    features = datasets.Features({k: datasets.Value(v) for k, v in DATASET_FEATURES.items()})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    out = tmp_path / "corpus"
    run_cli("prepare", str(path), "--val_fraction", "0", "--out", str(out))
    meta = _meta(out)
    assert sorted(meta["artists"]) == ["DJ Kilowatt", "Juniper Vale"] and meta["songs"]["train"] == 3
    assert "soft moss grows" in _train_text(out)


def test_parquet_with_renamed_columns_and_errors(tmp_path):
    path = tmp_path / "songs.parquet"
    path.write_bytes(_parquet(TRAIN))
    out = tmp_path / "corpus"
    proc = run_cli("prepare", str(path), "--out", str(out), check=False)
    assert proc.returncode == 1 and "no artist column 'artist'" in proc.stderr and "--artist_column" in proc.stderr
    assert not out.exists()
    proc = run_cli("prepare", str(path), "--artist_column", "singer", "--lyrics_column", "lyric", "--out", str(out),
                   check=False)
    assert proc.returncode == 1 and "no lyrics column 'lyric'" in proc.stderr and "--lyrics_column" in proc.stderr
    run_cli("prepare", str(path), "--artist_column", "singer", "--lyrics_column", "text", "--val_fraction", "0",
            "--out", str(out))
    assert sorted(_meta(out)["artists"]) == ["Ada Lune", "Bo Vance"]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    proc = run_cli("prepare", str(bad), "--out", str(tmp_path / "c2"), check=False)
    assert proc.returncode == 1 and "is not a readable parquet file" in proc.stderr
