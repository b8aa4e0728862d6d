"""similarity score: which artist's style a text carries.

For a collaboration written by `lyricdist collab`, each segment's similarity to artist A and artist B (does the
part A wrote read like A?); for a plain text, the nearest artists. An artist's similarity is the mean MaLSTM
similarity to that artist's reference songs (the training songs stored in the checkpoint, or --sources).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import LyricdistError
from .checkpoint import encode_texts, load_similarity_checkpoint
from .model import MaLSTM
from .pairs import artist_names, load_songs, normalise


class References:
    """Reference song vectors grouped by artist."""

    def __init__(self, artists: list[str], vectors: torch.Tensor, artist_ids: torch.Tensor):
        self.artists, self.vectors, self.artist_ids = artists, vectors, artist_ids

    @classmethod
    def from_songs(cls, model: MaLSTM, vocab, specs: list[str]) -> "References":
        songs = load_songs(specs)
        artists = artist_names(songs)
        index = {normalise(a): k for k, a in enumerate(artists)}
        ids = torch.tensor([index[normalise(s.artist)] for s in songs])
        return cls(artists, encode_texts(model, vocab, [s.text for s in songs]), ids)

    def artist_scores(self, vectors: torch.Tensor) -> torch.Tensor:
        """[texts, artists]: mean similarity of each text to each artist's songs."""
        sims = MaLSTM.similarity(vectors[:, None, :], self.vectors[None, :, :])  # [texts, songs]
        totals = torch.zeros(len(vectors), len(self.artists)).index_add_(1, self.artist_ids, sims)
        counts = torch.bincount(self.artist_ids, minlength=len(self.artists)).clamp_min(1)
        return totals / counts

    def find(self, name: str) -> int:
        wanted = normalise(name)
        for k, a in enumerate(self.artists):
            if normalise(a) == wanted:
                return k
        raise LyricdistError(
            f"artist {name!r} has no reference songs (known: {', '.join(self.artists)}); "
            f"pass --sources with lyrics by this artist"
        )


def score_collab(model, vocab, refs: References, collab: dict) -> dict:
    segments = collab.get("segments")
    authors = collab.get("authors") or sorted({s.get("author", "") for s in segments or []})
    if not isinstance(segments, list) or not segments or len(authors) < 2:
        raise LyricdistError("the collaboration JSON needs 'segments' [{author, text}, ...] and two 'authors'")
    cols = [refs.find(a) for a in authors]
    texts = [str(s.get("text", "")) for s in segments]
    scores = refs.artist_scores(encode_texts(model, vocab, texts))[:, cols]
    rows, correct = [], 0
    for seg, text, row in zip(segments, texts, scores.tolist()):
        closer = authors[max(range(len(authors)), key=lambda k: row[k])]
        match = normalise(closer) == normalise(str(seg.get("author", "")))
        correct += match
        rows.append({"author": seg.get("author"), "similarity": dict(zip(authors, row)), "closer_to": closer,
                     "matches_author": match, "text": text})
    return {"authors": list(authors), "segments": rows, "attribution_accuracy": correct / len(rows)}


def nearest_artists(model, vocab, refs: References, text: str, top: int) -> dict:
    row = refs.artist_scores(encode_texts(model, vocab, [text]))[0]
    order = torch.argsort(row, descending=True)[:top].tolist()
    return {"nearest": [{"artist": refs.artists[k], "similarity": float(row[k])} for k in order]}


def score(checkpoint: str, input_path: str, sources: list[str] | None = None, top: int = 5) -> dict:
    model, vocab, config, stored = load_similarity_checkpoint(checkpoint)
    if sources:
        refs = References.from_songs(model, vocab, sources)
    else:
        refs = References(config["artists"], stored["vectors"], stored["artist_ids"])
    path = Path(input_path)
    if not path.is_file():
        raise LyricdistError(f"{input_path!r} not found; give a `lyricdist collab` JSON or a text file")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and "segments" in obj:
        return score_collab(model, vocab, refs, obj)
    if path.suffix == ".json":
        raise LyricdistError(f"{input_path} is JSON but has no 'segments'; give the JSON `lyricdist collab` writes")
    return nearest_artists(model, vocab, refs, text, top)


def format_result(result: dict) -> str:
    if "nearest" in result:
        return "\n".join(f"{r['similarity']:.3f}  {r['artist']}" for r in result["nearest"])
    a, b = result["authors"][:2]
    lines = [f"{'#':>3}  {'written by':<20} {a[:12]:>12} {b[:12]:>12}  closer to", "-" * 72]
    for k, r in enumerate(result["segments"], 1):
        s = r["similarity"]
        mark = "" if r["matches_author"] else "  (other style)"
        lines.append(f"{k:>3}  {str(r['author'])[:20]:<20} {s[a]:>12.3f} {s[b]:>12.3f}  {r['closer_to']}{mark}")
    lines.append(f"segments that read like their author: {result['attribution_accuracy']:.0%}")
    return "\n".join(lines)
