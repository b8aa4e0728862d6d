"""`lyricdist push`: upload a checkpoint to the Hugging Face Hub with a generated model card (it samples the model
for the card). Checkpoint references (hf:, wandb:) are resolved by lyricdist.refs, as everywhere."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

from .checkpoint import resolve_checkpoint_dir
from .errors import LyricdistError
from .options import call, check_types, function_parser, listed
from .refs import CHECKPOINT_FILES, DEFAULT_VISIBILITY, HF_LOGIN, _REPO_ID, Visibility, _http_summary
from .sample import sample

DEFAULT_LICENSE = "unknown"  # the rights in the training lyrics are the user's to state


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
         message: str | None = None, license: str = DEFAULT_LICENSE, datasets: str | list[str] | None = None) -> str:
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

    check_types(push, locals())
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
    card = model_card(config, repo_id, text, license=license, datasets=listed(datasets))
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
    return function_parser(push)


def cli_run(parser, args) -> int:
    url = call(push, args)
    print(f"pushed {args.checkpoint} to {args.repo_id}: {url}")
    print(f"sample it with: lyricdist sample hf:{args.repo_id}")
    return 0
