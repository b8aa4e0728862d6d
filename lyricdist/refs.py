"""Checkpoint references: one place that turns a checkpoint on the Hugging Face Hub or in wandb into a directory.

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
from typing import Literal

from .errors import LyricdistError
from .fileio import atomic_write_json

CHECKPOINT_FORMAT = "lyricdist-checkpoint"  # config.json's "format" in every lyricdist checkpoint
CHECKPOINT_FILES = ("config.json", "vocab.json", "model.safetensors")
HF_PREFIX, WANDB_PREFIX = "hf:", "wandb:"
HF_LOGIN = "`hf auth login` (or set HF_TOKEN)"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# One visibility option, one default, for every repo lyricdist creates (`push`, `scrape --push_to_hub`): private,
# because lyrics are someone's copyright and a model can recite them; publishing is a decision (--visibility public).
Visibility = Literal["private", "public"]
DEFAULT_VISIBILITY: Visibility = "private"


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
