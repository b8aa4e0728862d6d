"""Transfer learning across character sets: start a model for a new corpus from a base checkpoint.

The original project's per-artist fine-tunes failed because the fine-tuning corpus had a different character
set than the 21-artist base model. Here the vocabularies are merged by character, so the corpus
token ids stay valid and nothing has to be re-prepared:

* merged vocabulary = the corpus's characters (ids unchanged) + the base characters the corpus lacks, appended;
* every character the base model knows gets its trained rows (input weights or embedding, output head);
* characters the base model never saw keep the fresh initialisation on the input side, and start in the head
  as unlikely as the base model's rarest character (bias = the smallest base bias), so the first fine-tuning
  losses are the base model's, not ln(V);
* artist embeddings are matched by artist name; artists new to the base model start at the mean embedding.

The trainer saves the merged vocabulary with every checkpoint, so sampling and `collab` use it unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .checkpoint import artist_index, load_checkpoint
from .errors import LyricdistError
from .model import CharRNN
from .vocab import Vocab

SHAPE_KEYS = ("cell", "num_layers", "hidden_size", "embedding_dim", "artist_embedding_dim", "artist_head")


def merge_vocab(corpus_chars: list[str], base_chars: list[str]) -> list[str]:
    """Corpus characters in corpus order (their token ids stay valid), then base-only characters."""
    known = set(corpus_chars)
    return list(corpus_chars) + [c for c in base_chars if c not in known]


def check_shapes(model: CharRNN, base: CharRNN, path: str) -> None:
    for key in SHAPE_KEYS:
        mine, theirs = getattr(model.cfg, key), getattr(base.cfg, key)
        if mine != theirs:
            raise LyricdistError(
                f"train.init_from {path}: model.{key} is {mine} here but {theirs} in the base model; "
                f"use the base model's shape (its config.json) in this run's model section"
            )


def _grow_vocab(model: CharRNN, size: int) -> None:
    """Resize every vocabulary-indexed weight of `model` to `size` rows (new rows zero, filled by the caller)."""
    old = model.vocab_size
    if size == old:
        return
    with torch.no_grad():
        like = {"dtype": model.head.weight.dtype, "device": model.head.weight.device}
        head = nn.Linear(model.head.in_features, size, **like)
        head.weight.zero_()
        head.bias.zero_()
        head.weight[:old] = model.head.weight
        head.bias[:old] = model.head.bias
        model.head = head
        if model.embed is not None:
            embed = nn.Embedding(size, model.embed.embedding_dim, **like)
            embed.weight.zero_()
            embed.weight[:old] = model.embed.weight
            model.embed = embed
        else:  # one-hot input: the first `old` input columns of layer 0 belong to characters
            w = model.rnn.weight_ih_l0
            grown = torch.zeros(w.shape[0], w.shape[1] + size - old, **like)
            grown[:, :old] = w[:, :old]
            grown[:, size:] = w[:, old:]  # artist embedding columns follow the characters
            model.rnn.weight_ih_l0 = nn.Parameter(grown)  # RNNBase.__setattr__ refreshes its flat weights
            model.rnn.input_size = grown.shape[1]
    model.vocab_size = size


def init_from_checkpoint(
    model: CharRNN, vocab: Vocab, path: str, artists: list[str] | None = None
) -> tuple[Vocab, dict]:
    """Load base weights from checkpoint `path` into `model`, growing it to the merged vocabulary.

    `model` must have been built for `vocab` (the new corpus), which is left as it is. Returns the merged vocabulary
    (the one to train, save and sample with) and what was done, for logs and tests.
    """
    base, base_vocab, base_config = load_checkpoint(path, device=model.head.weight.device)
    check_shapes(model, base, path)
    if model.vocab_size != len(vocab):
        raise LyricdistError(f"model has {model.vocab_size} characters but the vocabulary {len(vocab)}")
    n_corpus = len(vocab)
    merged = merge_vocab(vocab.chars, base_vocab.chars)
    _grow_vocab(model, len(merged))

    mine = torch.tensor([i for i, c in enumerate(merged) if c in base_vocab], dtype=torch.long)
    theirs = torch.tensor([base_vocab.id_of(c) for c in merged if c in base_vocab], dtype=torch.long)
    new = [i for i, c in enumerate(merged) if c not in base_vocab]
    base_state = base.state_dict()
    with torch.no_grad():
        for name, param in model.state_dict().items():
            if name.startswith(("head.", "embed.", "artist_embed.")) or name == "rnn.weight_ih_l0":
                continue
            param.copy_(base_state[name])
        model.head.weight[mine] = base.head.weight[theirs]
        model.head.bias[mine] = base.head.bias[theirs]
        if new:
            model.head.weight[new] = 0.0
            model.head.bias[new] = base.head.bias.min()
        if model.embed is not None:
            model.embed.weight[mine] = base.embed.weight[theirs]
            model.rnn.weight_ih_l0.copy_(base.rnn.weight_ih_l0)
        else:
            w, bw, V, bV = model.rnn.weight_ih_l0, base.rnn.weight_ih_l0, model.vocab_size, base.vocab_size
            w[:, mine] = bw[:, theirs]
            w[:, V:] = bw[:, bV:]  # artist embedding columns
        kept_artists = _init_artists(model, base, artists or [], base_config.get("artists", []))
    return Vocab(merged, lowercase=vocab.lowercase), {
        "base": str(path),
        "rows_kept": len(mine),
        "chars_added": [merged[i] for i in new],
        "base_only_chars": merged[n_corpus:],
        "vocab_size": len(merged),
        "artists_kept": kept_artists,
    }


def _init_artists(model: CharRNN, base: CharRNN, artists: list[str], base_artists: list[str]) -> list[str]:
    """Artist embedding rows by name; artists the base model does not know start at its mean artist."""
    if model.artist_embed is None:
        return []
    rows = model.artist_embed.weight
    kept = []
    for i in range(rows.shape[0]):
        j = artist_index(base_artists, artists[i]) if i < len(artists) else None
        if j is not None and j < base.artist_embed.weight.shape[0]:
            rows[i] = base.artist_embed.weight[j]
            kept.append(artists[i])
        else:
            rows[i] = base.artist_embed.weight.mean(0)
    return kept
