"""sample and the CLI contract: determinism, temperatures, unknown characters, and one-line errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, REPO, run_cli, run_main, tiny_config
from lyricdist.checkpoint import load_checkpoint
from lyricdist.errors import LyricdistError
from lyricdist.sample import sample
from lyricdist.train import load_config, train


@pytest.fixture(scope="module")
def checkpoint(demo_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(tiny_config(demo_corpus, out, "--train.max_steps=20", "--samples.enabled=false"))
    return out / "checkpoints" / "last"


def test_same_seed_same_text_and_one_sample_per_temperature(checkpoint):
    a = sample(str(checkpoint), primetext="the ", length=60, temperature=[0.2, 0.5, 1.0, 1.2], seed=5)
    b = sample(str(checkpoint), primetext="the ", length=60, temperature=[0.2, 0.5, 1.0, 1.2], seed=5)
    c = sample(str(checkpoint), primetext="the ", length=60, temperature=[0.2, 0.5, 1.0, 1.2], seed=6)
    assert [r.text for r in a] == [r.text for r in b]
    assert [r.text for r in a] != [r.text for r in c]
    assert [r.temperature for r in a] == [0.2, 0.5, 1.0, 1.2]
    assert all(r.text.startswith("the ") and len(r.text) == 64 for r in a)


def test_num_samples_top_k_and_argmax(checkpoint):
    rows = sample(str(checkpoint), primetext="a", length=40, temperature=[1.0], num_samples=3, seed=1)
    assert len(rows) == 3 and len({r.text for r in rows}) == 3
    _, vocab, _ = load_checkpoint(checkpoint)
    top1 = sample(str(checkpoint), primetext="a", length=40, top_k=1, num_samples=2, seed=1)
    greedy = sample(str(checkpoint), primetext="a", length=40, argmax=True, num_samples=2, seed=9)
    assert top1[0].text == top1[1].text == greedy[0].text == greedy[1].text


def test_primetext_outside_vocabulary(checkpoint, capsys):
    with pytest.raises(LyricdistError, match="not in the model's vocabulary: '§'"):
        sample(str(checkpoint), primetext="the §", length=5)
    rows = sample(str(checkpoint), primetext="the §", length=5, drop_unknown=True)
    assert rows[0].text.startswith("the ") and "dropped" in capsys.readouterr().err
    # the model is lowercase: capitals are folded rather than rejected
    assert sample(str(checkpoint), primetext="THE", length=3)[0].text.startswith("the")


@pytest.mark.slow
def test_sample_cli_output(checkpoint):
    proc = run_cli("sample", str(checkpoint), "--primetext", "hey", "--length", "20", "--temperature", "[0.5, 1.0]",
                   "--json", "true", "--seed", "3")
    rows = [json.loads(l) for l in proc.stdout.splitlines()]
    assert [r["temperature"] for r in rows] == [0.5, 1.0] and all(r["text"].startswith("hey") for r in rows)
    run_dir = checkpoint.parent.parent  # an OUT_DIR works too (best checkpoint)
    assert run_cli("sample", str(run_dir), "--length", "10").stdout.strip()


def _assert_one_line_error(proc, *words):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, checkpoint):
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 20)
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"abc\x00def\n" * 50)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = tmp_path / "corpus"
    cases = [
        (["prepare", str(tmp_path / "missing.txt"), "--out", str(out)], ["does not exist"]),
        (["prepare", str(empty), "--out", str(out)], ["is empty"]),
        (["prepare", str(latin), "--out", str(out)], ["not UTF-8", "iconv"]),
        (["prepare", str(binary), "--out", str(out)], ["not UTF-8"]),
        (["prepare", str(nul), "--out", str(out)], ["binary"]),
        (["prepare", "demo", "--out", str(out), "--val_fraction", "1.5"], ['Parser key "val_fraction"']),
    ]
    for args, words in cases:
        _assert_one_line_error(run_main(*args), *words)
        assert not out.exists(), args
    tiny = str(CONFIGS / "tiny.yaml")
    run = tmp_path / "run"
    corpus = tmp_path / "c"
    assert run_main("prepare", "demo", "--out", str(corpus)).returncode == 0
    base = ["train", "--config", tiny, f"--data.corpus={corpus}", f"--train.out_dir={run}"]
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(yaml.safe_dump({"train": {"learning_rate": 0.1}}))
    for args, words in [
        ([*base, "--train.lrr=0.1"], ["train.lrr"]),
        (["train", "--config", str(bad_yaml), f"--data.corpus={corpus}"], ["learning_rate"]),
        ([*base, "--model.cell=lsmt"], ["model.cell"]),
        ([*base, "--train.batch_size=4096"], ["corpus too small"]),
        ([*base, "--train.lr=-1"], ['Parser key "train.lr"']),
        ([*base, "--model.num_layers=0"], ['Parser key "model.num_layers"']),
        (["train", "--config", tiny, f"--data.corpus={tmp_path / 'nope'}", f"--train.out_dir={run}"], ["not found"]),
    ]:
        _assert_one_line_error(run_main(*args), *words)
        assert not run.exists() or not any(run.iterdir()), args
    for args, words in [
        (["sample", str(checkpoint), "--temperature", "0"], ['Parser key "temperature"', "restriction v>0"]),
        (["sample", str(checkpoint), "--length", "-3"], ['Parser key "length"']),
        (["sample", str(tmp_path / "nothing")], ["not found"]),
    ]:
        _assert_one_line_error(run_main(*args), *words)


def test_corrupted_and_mismatched_checkpoints(tmp_path, checkpoint):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    _assert_one_line_error(run_main("sample", str(broken)), "corrupted")
    mismatch = tmp_path / "mismatch"
    shutil.copytree(checkpoint, mismatch)
    vocab = json.loads((mismatch / "vocab.json").read_text())
    vocab["chars"] = vocab["chars"][:-1]
    (mismatch / "vocab.json").write_text(json.dumps(vocab))
    _assert_one_line_error(run_main("sample", str(mismatch)), "vocabulary mismatch")
    missing = tmp_path / "missing"
    shutil.copytree(checkpoint, missing)
    (missing / "vocab.json").unlink()
    _assert_one_line_error(run_main("sample", str(missing)), "missing vocab.json")


RUN_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if "artists" not in p.parts and "similarity" not in p.name)


@pytest.mark.parametrize("path", RUN_CONFIGS + [REPO / "lyricdist" / "presets" / "demo.yaml"], ids=lambda p: p.name)
def test_every_config_in_the_hub_loads(path):
    """litgpt-style: a config that no longer matches the code fails here, not on a user's cluster."""
    cfg = load_config(path)
    cfg.data.corpus = cfg.data.corpus or "x"
    cfg.validate()


def test_presets_match_the_write_ups():
    charrnn = load_config(CONFIGS / "charrnn-3x300.yaml")
    assert (charrnn.model.num_layers, charrnn.model.hidden_size, charrnn.train.seq_len, charrnn.train.batch_size) == (
        3, 300, 50, 50)
    assert (charrnn.train.optimizer, charrnn.train.lr, charrnn.train.lr_schedule, charrnn.train.lr_decay,
            charrnn.train.lr_decay_after, charrnn.train.grad_clip) == ("rmsprop", 2e-3, "epoch_decay", 0.97, 10, 5.0)
    original = load_config(CONFIGS / "lstm-4x256.yaml")
    assert (original.model.num_layers, original.model.hidden_size, original.train.seq_len) == (4, 256, 40)
    assert original.model.embedding_dim == 0  # one-hot, as the original
    base = load_config(CONFIGS / "base-1x128.yaml")
    assert (base.model.num_layers, base.model.hidden_size) == (1, 128)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("similarity-*.yaml")), ids=lambda p: p.name)
def test_every_similarity_config_loads(path):
    from lyricdist.similarity import load_config as load_similarity_config

    cfg = load_similarity_config(path)
    cfg.validate()
    assert cfg.model.hidden_size > 0
