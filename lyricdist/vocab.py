"""Character vocabulary: sorted characters, JSON on disk, fast numpy encoding."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import LyricdistError

MAX_CODEPOINT = 0x110000


def smallest_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every token id."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    raise LyricdistError(f"vocabulary of {vocab_size} characters is too large")


def codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@dataclass
class Vocab:
    chars: list[str]
    lowercase: bool = False
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars):
            raise LyricdistError("vocab.json lists a character twice; re-run `lyricdist prepare`")
        self._index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: str) -> bool:
        return ch in self._index

    @property
    def dtype(self) -> np.dtype:
        return smallest_dtype(len(self.chars))

    def lookup_table(self) -> np.ndarray:
        """codepoint -> id table (-1 for characters outside the vocabulary)."""
        table = np.full(MAX_CODEPOINT, -1, dtype=np.int32)
        for i, c in enumerate(self.chars):
            table[ord(c)] = i
        return table

    def id_of(self, ch: str) -> int:
        return self._index[ch]

    def missing(self, text: str) -> list[str]:
        return sorted({c for c in text if c not in self._index})

    def encode(self, text: str) -> list[int]:
        missing = self.missing(text)
        if missing:
            raise LyricdistError(f"characters not in the vocabulary: {missing!r}")
        return [self._index[c] for c in text]

    def encode_known(self, text: str) -> list[int]:
        """`text` read the way a primetext is: lowercased for a lowercase vocabulary, unknown characters dropped."""
        if self.lowercase:
            text = text.lower()
        return [self._index[c] for c in text if c in self._index]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_json(self) -> dict:
        return {"chars": self.chars, "lowercase": self.lowercase}

    @classmethod
    def from_json(cls, obj: dict) -> "Vocab":
        try:
            return cls(chars=list(obj["chars"]), lowercase=bool(obj.get("lowercase", False)))
        except (KeyError, TypeError) as e:
            raise LyricdistError(f"vocab.json is malformed ({e}); re-run `lyricdist prepare`") from None

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        path = Path(path)
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise LyricdistError(f"{path} not found; point at a corpus or checkpoint directory") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LyricdistError(f"{path} is corrupted ({e}); re-create it") from None
