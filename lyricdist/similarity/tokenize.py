"""Word tokenizer, vocabulary, and optional pre-trained word vectors read from a local text file."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Iterable

import torch

from ..errors import LyricdistError

PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"\w+(?:'\w+)*")  # keeps contractions (don't, rock'n'roll) whole, in any script


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    return _WORD.findall(text.lower() if lowercase else text)


class WordVocab:
    """Index 0 is padding, 1 stands for every word not in the vocabulary."""

    def __init__(self, words: list[str], lowercase: bool = True):
        self.words = [PAD, UNK] + [w for w in words if w not in (PAD, UNK)]
        self.lowercase = lowercase
        self._index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, texts: Iterable[str], lowercase: bool = True, max_size: int = 50000, min_count: int = 1):
        counts = Counter(w for t in texts for w in tokenize(t, lowercase))
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(ranked[:max_size], lowercase)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """At most max_len ids (None: all); an empty text becomes [<unk>] so every song has a final hidden state."""
        ids = [self._index.get(w, 1) for w in tokenize(text, self.lowercase)[:max_len]]
        return ids or [1]

    def to_json(self) -> dict:
        return {"words": self.words[2:], "lowercase": self.lowercase}

    @classmethod
    def from_json(cls, obj: dict) -> "WordVocab":
        return cls(list(obj["words"]), bool(obj.get("lowercase", True)))


def load_vectors(path: str | Path, vocab: WordVocab, dim: int) -> tuple[torch.Tensor, int]:
    """Rows for `vocab` from a word2vec or GloVe text file, and how many words it covered.

    Words the file lacks keep a small random vector; padding stays zero. Only vocabulary words are kept in
    memory, so a multi-gigabyte file is fine. A line's vector is its last `dim` fields, the word the rest: GloVe-840B
    has words with spaces (". . .", "at name@domain.com"). The first vector line settles the file's dimension.
    """
    path = Path(path)
    if not path.is_file():
        raise LyricdistError(f"word vectors {str(path)!r} not found; give a local word2vec/GloVe .txt file")
    weight = torch.randn(len(vocab), dim) * 0.1
    weight[0] = 0
    found: set[int] = set()
    first = True
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip().split(" ")
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec header: "COUNT DIM"
            if len(parts) < 2:
                continue
            if len(parts) <= dim or (first and len(parts) > dim + 1 and _is_number(parts[-dim - 1])):
                raise LyricdistError(
                    f"{path}:{lineno} has {len(parts) - 1}-d vectors but model.embedding_dim is {dim}; "
                    f"set --model.embedding-dim {len(parts) - 1}"
                )
            first = False
            word = " ".join(parts[:-dim])
            word = word.lower() if vocab.lowercase else word
            idx = vocab._index.get(word)
            if idx is not None and idx > 1 and idx not in found:  # first (most frequent) spelling wins
                try:
                    weight[idx] = torch.tensor([float(x) for x in parts[-dim:]])
                except ValueError:
                    raise LyricdistError(f"{path}:{lineno} is not a word followed by numbers") from None
                found.add(idx)
    return weight, len(found)


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True
