"""Checkpoints on the Hub and in wandb: `lyricdist push` and hf:REPO_ID[@REV] references against a fake Hub on
127.0.0.1 (tests/fake_hf.py) that huggingface_hub itself talks to (HF_ENDPOINT); wandb:ENTITY/PROJECT/NAME:ALIAS
against a fake W&B server (tests/fake_wandb.py) that the wandb public API talks to (WANDB_BASE_URL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import run_cli, tiny_config
from fake_hf import FakeHub, Repo
from fake_wandb import FakeWandb
from lyricdist.train import train

FAKE_HF_TOKEN = "hf_" + "FAKEtoken" * 4


@pytest.fixture(scope="module")
def checkpoint(demo_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub") / "run"
    train(tiny_config(demo_corpus, out, "--train.max_steps=20", "--samples.enabled=false"))
    return out / "checkpoints" / "best"


@pytest.fixture
def hub(tmp_path):
    with FakeHub() as hub:
        hub.env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": FAKE_HF_TOKEN,
                   "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1",
                   "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_XET": "1"}
        yield hub


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n"), card[:100]
    return yaml.safe_load(card.split("---\n")[1])


@pytest.mark.slow
def test_push_commits_the_checkpoint_and_a_model_card(hub, checkpoint):
    proc = run_cli("push", str(checkpoint), "me/lyrics", env=hub.env)
    assert "me/lyrics" in proc.stdout and "lyricdist sample hf:me/lyrics" in proc.stdout
    assert FAKE_HF_TOKEN not in proc.stdout + proc.stderr
    assert hub.repos["me/lyrics"].private  # private unless --visibility public, as `scrape --push-to-hub`
    (commit,) = hub.commits
    assert set(commit["files"]) == {"config.json", "vocab.json", "model.safetensors", "README.md"}
    for name in ("config.json", "vocab.json", "model.safetensors"):
        assert commit["files"][name] == (checkpoint / name).read_bytes(), name
    assert all(r["headers"].get("authorization") == f"Bearer {FAKE_HF_TOKEN}"
               for r in hub.requests if r["method"] == "POST")

    card = commit["files"]["README.md"].decode()
    meta = _front_matter(card)
    assert meta["library_name"] == "lyricdist" and meta["pipeline_tag"] == "text-generation"
    assert "lyricdist" in meta["tags"]
    config = json.loads((checkpoint / "config.json").read_text())
    assert meta["license"] == "unknown"  # the lyrics' rights are the user's to state (--license)
    (result,) = meta["model-index"][0]["results"]  # the Hub's evaluation results: the validation loss
    assert result["dataset"]["split"] == "validation"
    assert {m["type"]: m["value"] for m in result["metrics"]} == pytest.approx(
        {"loss": config["val_loss"], "bpc": config["val_loss"] / __import__("math").log(2)}, abs=1e-4)
    assert "1 x 32 LSTM" in card  # configs/tiny.yaml's shape
    assert f"{config['val_loss']:.4f} nats/char" in card and "bits/char" in card
    assert "lyricdist sample hf:me/lyrics" in card
    assert "- corpus: demo" in card  # the corpus summary, read from the corpus's meta.json
    # The card's sample is what `lyricdist sample` writes with the card's settings.
    local = run_cli("sample", str(checkpoint), "--length", "300", "--temperature", "0.8", "--seed", "0").stdout
    assert local.rstrip("\n") in card


@pytest.mark.slow
def test_hf_reference_samples_like_the_local_checkpoint_and_is_cached(hub, checkpoint, tmp_path):
    run_cli("push", str(checkpoint), "me/lyrics", env=hub.env)
    args = ["--length", "80", "--seed", "3", "--temperature", "0.7"]
    local = run_cli("sample", str(checkpoint), *args).stdout
    assert run_cli("sample", "hf:me/lyrics", *args, env=hub.env).stdout == local
    downloads = [r for r in hub.requests if r["method"] == "GET" and "/resolve/" in r["path"]]
    assert {Path(r["path"]).name for r in downloads} >= {"config.json", "vocab.json", "model.safetensors"}
    # Cached: with the Hub unreachable (offline mode) the same reference still loads.
    offline = {**hub.env, "HF_HUB_OFFLINE": "1"}
    assert run_cli("sample", "hf:me/lyrics", *args, env=offline).stdout == local
    # The memorisation check on a downloaded checkpoint, with the corpus given.
    corpus = json.loads((checkpoint / "config.json").read_text())["corpus"]
    proc = run_cli("sample", "hf:me/lyrics", *args, "--check_memorization", "true", "--corpus", corpus, env=hub.env)
    assert "memorisation" in proc.stderr


@pytest.mark.slow
def test_hf_revision_pins_a_commit_and_collab_takes_references(hub, checkpoint, tmp_path):
    run_cli("push", str(checkpoint), "me/lyrics", env=hub.env)
    first = hub.repos["me/lyrics"].commits[0]
    # A second commit on main replaces the weights with another model's.
    other = tmp_path / "other"
    import shutil

    shutil.copytree(checkpoint, other)
    state = other / "model.safetensors"
    from safetensors.torch import load_file, save_file

    weights = {k: v * 0.5 for k, v in load_file(str(state)).items()}
    save_file(weights, str(state), metadata={"format": "pt"})
    run_cli("push", str(other), "me/lyrics", env=hub.env)
    assert len(hub.repos["me/lyrics"].commits) == 2
    args = ["--length", "60", "--seed", "1"]
    pinned = run_cli("sample", f"hf:me/lyrics@{first}", *args, env=hub.env).stdout
    assert pinned == run_cli("sample", str(checkpoint), *args).stdout
    assert run_cli("sample", "hf:me/lyrics", *args, env=hub.env).stdout == run_cli("sample", str(other), *args).stdout

    song_local, song_hub = tmp_path / "local.json", tmp_path / "hub.json"
    run_cli("collab", str(checkpoint), str(other), "--seed", "2", "--turns", "2", "--lines", "2", "--out", str(song_local))
    run_cli("collab", f"hf:me/lyrics@{first}", "hf:me/lyrics", "--seed", "2", "--turns", "2", "--lines", "2",
            "--out", str(song_hub), env=hub.env)
    texts = [[s["text"] for s in json.loads(p.read_text())["segments"]] for p in (song_local, song_hub)]
    assert texts[0] == texts[1]


@pytest.mark.parametrize(
    "ref, message",
    [
        ("hf:me/absent", "no such model repo on the Hub, or it is private"),
        ("hf:me/lyrics@nope", "revision 'nope' not found"),
        ("hf:not a repo", "is not a Hub model reference"),
        ("hf:me/bert", "is not a lyricdist checkpoint"),
        ("wandb:just-a-name", "is not a model artifact reference"),
    ],
)
@pytest.mark.slow
def test_bad_references_are_one_line_errors(hub, checkpoint, ref, message):
    for repo in ("me/lyrics", "me/bert"):
        hub.repos[repo] = Repo(private=False)
    hub.add_commit("me/lyrics", {p.name: p.read_bytes() for p in checkpoint.iterdir()})
    hub.add_commit("me/bert", {"config.json": b'{"model_type": "bert"}', "vocab.json": b"{}",
                               "model.safetensors": b"x"})
    proc = run_cli("sample", ref, "--length", "10", env=hub.env, check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


@pytest.mark.slow
def test_push_without_a_token_says_how_to_log_in(hub, checkpoint):
    proc = run_cli("push", str(checkpoint), "me/lyrics", env={**hub.env, "HF_TOKEN": ""}, check=False)
    assert proc.returncode == 1 and "hf auth login" in proc.stderr and proc.stderr.count("\n") == 1
    assert not hub.commits


def test_reference_parsing():
    from lyricdist.refs import parse_hf, parse_wandb

    assert parse_hf("me/lyrics") == ("me/lyrics", None)
    assert parse_hf("me/lyrics@v1.0") == ("me/lyrics", "v1.0")
    assert parse_wandb("ent/proj/model-abc:best") == ("ent/proj/model-abc", "best")
    assert parse_wandb("ent/proj/model-abc") == ("ent/proj/model-abc", "latest")


@pytest.mark.slow
def test_wandb_reference_downloads_the_model_artifact(checkpoint, tmp_path):
    key = "local-" + "f" * 40
    with FakeWandb() as wb:
        files = {p.name: p.read_bytes() for p in checkpoint.iterdir()}
        wb.add_artifact("me", "lyricdist", "model-abc123", files, ["best"])
        env = {"WANDB_BASE_URL": wb.url, "WANDB_API_KEY": key, "WANDB_MODE": "online",
               "LYRICDIST_CACHE": str(tmp_path / "cache"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
               "WANDB_DIR": str(tmp_path / "wandb-dir"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
        args = ["--length", "60", "--seed", "5"]
        proc = run_cli("sample", "wandb:me/lyricdist/model-abc123:best", *args, env=env)
        assert proc.stdout == run_cli("sample", str(checkpoint), *args).stdout
        assert key not in proc.stdout + proc.stderr
        assert "ArtifactMembershipByName" in wb.queries and "GetArtifactMembershipFileUrls" in wb.queries
        downloaded = tmp_path / "cache" / "wandb" / "me" / "lyricdist" / "model-abc123" / "v0"
        assert {p.name for p in downloaded.iterdir()} >= set(files)

        proc = run_cli("sample", "wandb:me/lyricdist/model-abc123:nope", *args, env=env, check=False)
        assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0, proc.stderr
        assert "could not find this model artifact" in proc.stderr
        wb.add_artifact("me", "lyricdist", "not-a-model", {"weights.bin": b"xx"}, [])
        proc = run_cli("sample", "wandb:me/lyricdist/not-a-model:latest", *args, env=env, check=False)
        assert proc.returncode == 1 and "is not a lyricdist checkpoint" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_memorisation_check_of_a_wandb_model_fetches_the_corpus_artifact_it_names(checkpoint, demo_corpus, tmp_path):
    """The training run logs its corpus as a dataset artifact and names it in each model artifact: a model downloaded
    where the recorded corpus path does not exist is checked against that artifact; without one, --corpus is asked."""
    config = json.loads((checkpoint / "config.json").read_text())
    moved = {**config, "corpus": "/elsewhere/corpus/demo"}
    files = {p.name: p.read_bytes() for p in checkpoint.iterdir()}
    files["config.json"] = json.dumps(moved).encode()
    corpus_files = {p.name: p.read_bytes() for p in demo_corpus.iterdir() if p.is_file()}
    with FakeWandb() as wb:
        wb.add_artifact("me", "lyricdist", "corpus-demo", corpus_files, [], kind="dataset")
        wb.add_artifact("me", "lyricdist", "model-abc", files, ["best"], metadata={"corpus_artifact": "corpus-demo"})
        wb.add_artifact("me", "lyricdist", "model-nocorpus", files, ["best"])
        env = {"WANDB_BASE_URL": wb.url, "WANDB_API_KEY": "local-" + "f" * 40, "WANDB_MODE": "online",
               "LYRICDIST_CACHE": str(tmp_path / "cache"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
               "WANDB_DIR": str(tmp_path / "wandb-dir"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
        args = ["--length", "80", "--seed", "3", "--check_memorization", "true", "--json", "true"]
        proc = run_cli("sample", "wandb:me/lyricdist/model-abc:best", *args, env=env)
        report = json.loads(proc.stdout)["memorization"]
        local = json.loads(run_cli("sample", str(checkpoint), *args).stdout)["memorization"]
        assert [{**r, "corpus": None} for r in report] == [{**r, "corpus": None} for r in local]  # the same check
        assert all(r["corpus"].endswith("corpus-demo/v0") for r in report)
        fetched = tmp_path / "cache" / "wandb" / "me" / "lyricdist" / "corpus-demo" / "v0"
        assert (fetched / "meta.json").read_bytes() == (demo_corpus / "meta.json").read_bytes()
        proc = run_cli("sample", "wandb:me/lyricdist/model-nocorpus:best", *args, env=env, check=False)
        assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0, proc.stderr
        assert "names no wandb corpus artifact; pass --corpus DIR" in proc.stderr


def test_memorisation_check_on_a_download_names_what_it_needs(hub, checkpoint):
    """A downloaded checkpoint whose recorded corpus is not on this machine: the check asks for --corpus."""
    config = json.loads((checkpoint / "config.json").read_text())
    config["corpus"] = "/elsewhere/corpus/demo"
    files = {p.name: p.read_bytes() for p in checkpoint.iterdir()}
    files["config.json"] = json.dumps(config).encode()
    hub.repos["me/moved"] = Repo(private=False)
    hub.add_commit("me/moved", files)
    proc = run_cli("sample", "hf:me/moved", "--length", "20", "--check_memorization", "true", env=hub.env, check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "/elsewhere/corpus/demo" in proc.stderr and "pass --corpus DIR" in proc.stderr


@pytest.mark.slow
def test_push_promotes_remote_references_with_license_datasets_and_visibility(hub, checkpoint, tmp_path):
    """`push` takes what every checkpoint reader takes: hf: (another repo, a pinned revision) and wandb: (promote a
    W&B model to the Hub); --visibility public, --license and --datasets reach the repo and its card."""
    run_cli("push", str(checkpoint), "me/lyrics", env=hub.env)
    proc = run_cli("push", "hf:me/lyrics", "me/promoted", "--visibility", "public", "--license", "mit",
                   "--datasets", "me/lyrics-dataset", env=hub.env)
    assert "me/promoted" in proc.stdout
    assert not hub.repos["me/promoted"].private
    promoted = hub.commits[-1]["files"]
    for name in ("config.json", "vocab.json", "model.safetensors"):
        assert promoted[name] == (checkpoint / name).read_bytes(), name
    meta = _front_matter(promoted["README.md"].decode())
    assert meta["license"] == "mit" and meta["datasets"] == ["me/lyrics-dataset"]
    assert meta["model-index"][0]["results"][0]["dataset"]["type"] == "me/lyrics-dataset"

    with FakeWandb() as wb:
        wb.add_artifact("me", "lyricdist", "model-abc123", {p.name: p.read_bytes() for p in checkpoint.iterdir()},
                        ["best"])
        env = {**hub.env, "WANDB_BASE_URL": wb.url, "WANDB_API_KEY": "local-" + "f" * 40, "WANDB_MODE": "online",
               "LYRICDIST_CACHE": str(tmp_path / "cache"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
               "WANDB_DIR": str(tmp_path / "wandb-dir"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
        run_cli("push", "wandb:me/lyricdist/model-abc123:best", "me/from-wandb", env=env)
    from_wandb = hub.commits[-1]
    assert from_wandb["repo"] == "me/from-wandb" and hub.repos["me/from-wandb"].private
    assert from_wandb["files"]["model.safetensors"] == (checkpoint / "model.safetensors").read_bytes()

    proc = run_cli("push", "hf:me/absent", "me/x", env=hub.env, check=False)
    assert proc.returncode == 1 and "no such model repo" in proc.stderr and proc.stderr.count("\n") == 1


def test_push_and_scrape_share_one_visibility_option(capsys):
    """One flag, one default, one help line for every repo lyricdist creates."""
    from lyricdist.cli import main

    helps = []
    for command in ("push", "scrape"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--public" not in text and "--private" not in text, command
        helps.append(text[text.rindex("--visibility"):].split(" --")[0])  # its help line, not the usage line
    assert helps[0] == helps[1] and "default: private" in helps[0], helps


PRETRAINED = """
import json, sys
from lyricdist import LyricsModel
from lyricdist.sample import sample

ckpt, first = sys.argv[1], sys.argv[2]
out = {}
model = LyricsModel.from_pretrained("hf:me/lyrics")
out["hf"] = model.generate("the ", length=80, temperature=0.7, seed=3)
out["bare"] = LyricsModel.from_pretrained("me/lyrics", revision=first).generate("the ", length=80, temperature=0.7,
                                                                               seed=3)
out["local"] = LyricsModel.from_pretrained(ckpt).generate("the ", length=80, temperature=0.7, seed=3)
out["cli"] = sample(ckpt, primetext="the ", length=80, temperature=[0.7], seed=3)[0].text
out["url"] = model.push_to_hub("me/copy")
print(json.dumps(out))
"""


@pytest.mark.slow
def test_lyrics_model_from_pretrained_generates_like_sample_and_pushes_a_lyricdist_checkpoint(hub, checkpoint, tmp_path):
    """The Python class (on huggingface_hub's PyTorchModelHubMixin) against the fake Hub: hf:REPO, a bare repo id
    with a revision and a local checkpoint load and generate `lyricdist sample`'s text; push_to_hub writes a
    lyricdist checkpoint (vocab.json included, private repo, lyricdist's card) that `lyricdist sample` reads."""
    import subprocess
    import sys

    run_cli("push", str(checkpoint), "me/lyrics", env=hub.env)
    first = hub.repos["me/lyrics"].commits[0]
    import os

    proc = subprocess.run([sys.executable, "-c", PRETRAINED, str(checkpoint), first], capture_output=True, text=True,
                          env={**os.environ, **hub.env}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["hf"] == out["bare"] == out["local"] == out["cli"] and out["cli"].startswith("the ")
    assert hub.repos["me/copy"].private
    copy = hub.commits[-1]["files"]
    assert {"config.json", "vocab.json", "model.safetensors", "README.md"} <= set(copy)
    assert copy["vocab.json"] == (checkpoint / "vocab.json").read_bytes()
    card = copy["README.md"].decode()
    assert _front_matter(card)["library_name"] == "lyricdist" and "lyricdist sample hf:me/copy" in card
    args = ["--primetext", "the ", "--length", "80", "--temperature", "0.7", "--seed", "3"]
    assert run_cli("sample", "hf:me/copy", *args, env=hub.env).stdout.rstrip("\n") == out["cli"]
