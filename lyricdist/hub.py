"""Checkpoints on the Hugging Face Hub and in wandb: one place that turns a checkpoint reference into a directory,
and `lyricdist push`.

A checkpoint reference is a local directory, `hf:REPO_ID[@REVISION]` (downloaded with huggingface_hub into its
cache) or `wandb:ENTITY/PROJECT/NAME[:ALIAS]` (a model artifact, downloaded with the wandb API). Every command
that loads a checkpoint goes through lyricdist.checkpoint, which calls `local_checkpoint_dir` here, so sample,
collab, app and the memorisation check take all three without code of their own. Tokens come from the
environment (HF_TOKEN, WANDB_API_KEY) or the libraries' own logins; they are never printed or saved.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal, Sequence

from .errors import LyricdistError
from .fileio import atomic_write_json

CHECKPOINT_FILES = ("config.json", "vocab.json", "model.safetensors")
HF_PREFIX, WANDB_PREFIX = "hf:", "wandb:"
HF_LOGIN = "`hf auth login` (or set HF_TOKEN)"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# One visibility option, one default, for every repo lyricdist creates (`push`, `scrape --push-to-hub`): private,
# because lyrics are someone's copyright and a model can recite them; publishing is a decision (--visibility public).
Visibility = Literal["private", "public"]
DEFAULT_VISIBILITY: Visibility = "private"
DEFAULT_LICENSE = "unknown"  # the rights in the training lyrics are the user's to state


def is_remote(ref: str | os.PathLike) -> bool:
    ref = str(ref)
    return ref.startswith((HF_PREFIX, WANDB_PREFIX)) and not Path(ref).exists()


_RESOLVED: dict[str, Path] = {}  # remote reference -> its download, once per process (the Hub is asked once)


def local_checkpoint_dir(ref: str | os.PathLike) -> Path:
    """The local directory for a checkpoint reference, downloading (or reusing the cached copy of) a remote one."""
    if not is_remote(ref):
        return Path(ref)
    ref = str(ref)
    if ref not in _RESOLVED:
        path = _from_hf(ref[len(HF_PREFIX):]) if ref.startswith(HF_PREFIX) else _from_wandb(ref[len(WANDB_PREFIX):])
        _verify(path, ref)
        _RESOLVED[ref] = path
    return _RESOLVED[ref]


def _verify(path: Path, ref: str) -> None:
    missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
    if missing:
        raise LyricdistError(f"{ref} is not a lyricdist checkpoint (it has no {', '.join(missing)}); "
                             f"push one with `lyricdist push CHECKPOINT REPO_ID`")
    from .checkpoint import CHECKPOINT_FORMAT

    try:
        fmt = json.loads((path / "config.json").read_text(encoding="utf-8")).get("format")
    except (ValueError, UnicodeDecodeError, AttributeError):
        fmt = None
    if fmt != CHECKPOINT_FORMAT:
        raise LyricdistError(f"{ref} is not a lyricdist checkpoint (config.json format is {fmt!r}, "
                             f"not {CHECKPOINT_FORMAT!r})")


# ---- Hugging Face Hub ------------------------------------------------------------------------------------------
def parse_hf(spec: str) -> tuple[str, str | None]:
    """'user/repo@rev' -> ('user/repo', 'rev')."""
    repo_id, _, revision = spec.partition("@")
    if not _REPO_ID.match(repo_id) or (spec.count("@") and not revision):
        raise LyricdistError(f"hf:{spec} is not a Hub model reference; write hf:USER/REPO or hf:USER/REPO@REVISION")
    return repo_id, revision or None


def _from_hf(spec: str, **download) -> Path:
    """The local snapshot of hf:`spec` (only the checkpoint files and the card). `download`: snapshot_download's
    options (token, cache_dir, force_download, local_files_only), for LyricsModel.from_pretrained."""
    repo_id, revision = parse_hf(spec)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    ref = f"hf:{spec}"
    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=[*CHECKPOINT_FILES, "README.md"],
                                 **download)
    except RevisionNotFoundError:
        raise LyricdistError(f"{ref}: revision {revision!r} not found in {repo_id}; check the branch, tag or commit") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise LyricdistError(f"{ref}: no such model repo on the Hub, or it is private: check the id, or log in "
                             f"with {HF_LOGIN}") from None
    except LocalEntryNotFoundError:
        raise LyricdistError(f"{ref}: the Hub cannot be reached and the model is not in the local cache; connect "
                             f"(and unset HF_HUB_OFFLINE) to download it once") from None
    except HfHubHTTPError as e:
        raise LyricdistError(f"{ref}: the Hub refused the download ({_http_summary(e)})") from None
    return Path(path)


def _http_summary(e: Exception) -> str:
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"HTTP {status}: {first}" if status else first


# ---- wandb -----------------------------------------------------------------------------------------------------
def parse_wandb(spec: str) -> tuple[str, str]:
    """'entity/project/name:alias' -> ('entity/project/name', 'alias'); the alias defaults to 'latest'."""
    path, _, alias = spec.partition(":")
    if path.count("/") != 2 or not all(path.split("/")):
        raise LyricdistError(f"wandb:{spec} is not a model artifact reference; write wandb:ENTITY/PROJECT/NAME:ALIAS "
                             f"(e.g. wandb:me/lyricdist/model-abc123:best)")
    return path, alias or "latest"


def _cache_root() -> Path:
    from .fileio import cache_root

    return cache_root()


SOURCE_SUFFIX = ".source.json"  # beside a wandb download: where it came from and its artifact's metadata


def _wandb_artifact(qualified: str, kind: str, ref: str):
    import wandb

    try:
        return wandb.Api().artifact(qualified, type=kind)
    except Exception as e:  # noqa: BLE001 - wandb raises CommError, ValueError, UsageError...
        raise LyricdistError(f"{ref}: the wandb API could not find this {kind} artifact ({type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); check the name and alias, "
                             f"and log in with `wandb login` (or set WANDB_API_KEY)") from None


def _download(artifact, path: str, ref: str) -> Path:
    root = _cache_root() / "wandb" / path / artifact.version
    try:
        return Path(artifact.download(root=str(root)))
    except Exception as e:  # noqa: BLE001
        raise LyricdistError(f"{ref}: download failed ({type(e).__name__}: {e})") from None


def _from_wandb(spec: str) -> Path:
    path, alias = parse_wandb(spec)
    ref = f"wandb:{spec}"
    artifact = _wandb_artifact(f"{path}:{alias}", "model", ref)
    local = _download(artifact, path, ref)
    atomic_write_json(local.with_name(local.name + SOURCE_SUFFIX),
                      {"artifact": f"{path}:{artifact.version}", "metadata": dict(artifact.metadata or {})})
    return local


def training_corpus_of_download(checkpoint_dir: Path) -> Path | None:
    """The training corpus of a checkpoint downloaded from wandb, fetched from the dataset artifact its model artifact
    names (the training run logged it); None for other checkpoints or when the model artifact names none."""
    source = checkpoint_dir.with_name(checkpoint_dir.name + SOURCE_SUFFIX)
    if not source.is_file():
        return None
    info = json.loads(source.read_text(encoding="utf-8"))
    name = info.get("metadata", {}).get("corpus_artifact")
    if not name:
        return None
    entity, project, _ = info["artifact"].split("/", 2)
    path = f"{entity}/{project}/{name}"
    corpus = _download(_wandb_artifact(f"{path}:latest", "dataset", f"wandb:{path}"), path, f"wandb:{path}")
    if not (corpus / "meta.json").is_file():
        raise LyricdistError(f"wandb:{path} is not a lyricdist corpus (no meta.json); pass --corpus DIR")
    return corpus


# ---- push ------------------------------------------------------------------------------------------------------
def _corpus_summary(config: dict) -> list[str]:
    corpus = config.get("corpus")
    meta_path = Path(corpus) / "meta.json" if corpus else None
    if not meta_path or not meta_path.is_file():
        return [f"- corpus: `{corpus}` (not available where this card was written)" if corpus else "- corpus: unknown"]
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    splits, songs = meta.get("splits", {}), meta.get("songs", {})
    sources = ", ".join(s.get("source", "?") for s in meta.get("sources", [])) or "?"
    return [
        f"- corpus: {sources}",
        f"- characters: {splits.get('train', {}).get('chars', 0):,} training, {splits.get('val', {}).get('chars', 0):,} "
        f"validation" + (f"; {songs.get('train', 0)} + {songs.get('val', 0)} songs (split by song)" if songs else ""),
        f"- artists ({len(meta.get('artists', []))}): {', '.join(meta.get('artists', [])[:20]) or '-'}",
        f"- lowercased: {meta.get('lowercase')}",
    ]


_HUB_DATASET = re.compile(r"^hf:([A-Za-z0-9][\w.-]*/[\w.-]+)")


def _corpus_meta(config: dict) -> dict:
    corpus = config.get("corpus")
    meta_path = Path(corpus) / "meta.json" if corpus else None
    return json.loads(meta_path.read_text(encoding="utf-8")) if meta_path and meta_path.is_file() else {}


def hub_datasets(config: dict) -> list[str]:
    """The Hub datasets a checkpoint was trained on: its corpus's `hf:` sources (from the corpus's meta.json)."""
    found = (_HUB_DATASET.match(str(s.get("source", ""))) for s in _corpus_meta(config).get("sources", []))
    return list(dict.fromkeys(m.group(1) for m in found if m))


def model_card(config: dict, repo_id: str, sample_text: str, license: str = DEFAULT_LICENSE,
               datasets: Sequence[str] | None = None) -> str:
    """README.md for the Hub: YAML metadata (library, pipeline, license, datasets, and a model-index with the
    validation loss, which the Hub shows as evaluation results), then shape, corpus, validation loss, a sample and
    how to use it. `config`: the checkpoint's config.json; `datasets`: Hub dataset ids (default: hub_datasets)."""
    import math

    from huggingface_hub import EvalResult, ModelCardData

    m = config.get("model", {})
    artists = config.get("artists") or []
    datasets = list(datasets) if datasets else hub_datasets(config)
    val = config.get("val_loss")
    name = repo_id.split("/")[-1]
    results = []
    if isinstance(val, (int, float)):
        corpus = Path(config["corpus"]).name if config.get("corpus") else "corpus"
        where = dict(task_type="text-generation", task_name="Character-level lyrics generation",
                     dataset_type=datasets[0] if datasets else corpus, dataset_name=datasets[0] if datasets else corpus,
                     dataset_split="validation")
        results = [EvalResult(**where, metric_type="loss", metric_name="validation loss (nats/char)",
                              metric_value=round(float(val), 4)),
                   EvalResult(**where, metric_type="bpc", metric_name="bits per character",
                              metric_value=round(float(val) / math.log(2), 4))]
    data = ModelCardData(library_name="lyricdist", pipeline_tag="text-generation", license=license,
                         datasets=datasets or None, model_name=name if results else None,
                         eval_results=results or None,
                         tags=["lyricdist", "char-rnn", m.get("cell", "lstm"), "lyrics"])
    loss = (f"{val:.4f} nats/char ({val / math.log(2):.4f} bits/char) at step {config.get('step')}"
            if isinstance(val, (int, float)) else "not evaluated")
    inputs = f"a {m.get('embedding_dim')}-d character embedding" if m.get("embedding_dim") else "one-hot characters"
    conditioned = (f", conditioned on {m.get('artist_embedding_dim')}-d artist embeddings"
                   if m.get("artist_embedding_dim") else "")
    artist_arg = f", artist={json.dumps(artists[0])}" if m.get("artist_embedding_dim") and artists else ""
    fence = "```"
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# {name}", "",
        "A character-level recurrent lyric generator trained with lyricdist (safetensors weights, config.json and "
        "vocab.json; nothing is unpickled on load).", "",
        "## Model", "",
        f"- {m.get('num_layers')} x {m.get('hidden_size')} {m.get('cell', 'lstm').upper()} over {inputs}"
        f"{conditioned}; dropout {m.get('dropout', 0)}",
        f"- vocabulary: {config.get('vocab_size')} characters",
        f"- artists: {', '.join(artists) if artists else '-'}", "",
        "## Training data", "", *_corpus_summary(config),
        *([f"- Hub datasets: {', '.join(datasets)}"] if datasets else []), "",
        "## Evaluation", "", f"- validation loss: {loss}",
        f"- training loss: {config['train_loss']:.4f} nats/char" if isinstance(config.get("train_loss"), float) else "",
        "", "## Sample", "", "Seed 0, temperature 0.8:", "", fence + "text", sample_text.rstrip("\n"), fence, "",
        "## Use it", "", fence + "bash", "pip install lyricdist",
        f"lyricdist sample hf:{repo_id} --length 500 --temperature 0.5 1.0"
        + (f" --artist {json.dumps(artists[0])}" if m.get("artist_embedding_dim") and artists else ""),
        f"lyricdist collab hf:{repo_id} OTHER_CHECKPOINT --mode alternate --seed 0",
        f"lyricdist app hf:{repo_id} OTHER_CHECKPOINT", fence, "",
        "From Python:", "", fence + "python", "from lyricdist import LyricsModel", "",
        f'model = LyricsModel.from_pretrained("hf:{repo_id}")',
        f'print(model.generate("", length=300, temperature=0.8, seed=0{artist_arg}))', fence, "",
    ]
    return "\n".join(lines)


def push(checkpoint: str, repo_id: str, visibility: Visibility = DEFAULT_VISIBILITY, revision: str | None = None,
         message: str | None = None, license: str = DEFAULT_LICENSE, datasets: list[str] | None = None) -> str:
    """Upload a checkpoint to the Hugging Face Hub with a generated model card (README.md); returns the commit URL.

    Args:
        checkpoint: a checkpoint directory, a run's out_dir (its best, else last), hf:REPO[@REV] or
            wandb:ENTITY/PROJECT/NAME:ALIAS (promote a W&B model to the Hub)
        repo_id: USER/REPO on the Hub (created if missing)
        visibility: visibility of a repo created on the Hub (an existing repo keeps its own)
        revision: branch to commit to (default: main)
        message: commit message
        license: the weights' license, a Hub license id (mit, cc-by-4.0, other, ...); the training lyrics' rights
            are yours to state
        datasets: Hub datasets the model was trained on (default: the corpus's hf: sources)
    """
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    from .checkpoint import resolve_checkpoint_dir
    from .cli import check_ranges
    from .sample import sample

    check_ranges(push, locals())
    if not _REPO_ID.match(repo_id):
        raise LyricdistError(f"REPO_ID {repo_id!r} is not a Hub repo id; write USER/REPO")
    if not get_token():
        raise LyricdistError(f"no Hugging Face token: log in with {HF_LOGIN}")
    path = resolve_checkpoint_dir(checkpoint)  # a remote reference is downloaded (and verified) first
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    artists = config.get("artists") or []
    conditioned = config.get("model", {}).get("artist_embedding_dim")
    text = sample(str(path), length=300, temperature=[0.8], seed=0,
                  artist=artists[0] if conditioned and artists else None)[0].text
    card = model_card(config, repo_id, text, license=license, datasets=datasets)
    ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path / name)) for name in CHECKPOINT_FILES]
    ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
    api = HfApi()
    try:
        api.create_repo(repo_id, private=visibility == "private", exist_ok=True)
        info = api.create_commit(repo_id, ops, revision=revision,
                                 commit_message=message or f"Upload lyricdist checkpoint (step {config.get('step')})")
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        hint = f"; log in with {HF_LOGIN} using a token with write access" if status in (401, 403) else ""
        raise LyricdistError(f"push to {repo_id} failed ({_http_summary(e)}){hint}") from None
    return info.commit_url


def cli_parser():
    from .cli import function_parser

    return function_parser(push)


def cli_run(parser, args) -> int:
    from .cli import call

    url = call(push, args)
    print(f"pushed {args.checkpoint} to {args.repo_id}: {url}")
    print(f"sample it with: lyricdist sample hf:{args.repo_id}")
    return 0
