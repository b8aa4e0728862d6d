"""similarity score: which artist's style a text carries.

For a collaboration written by `lyricdist collab`, each segment's similarity to artist A and artist B (does the
part A wrote read like A?); for a plain text, the nearest artists. An artist's similarity is the mean MaLSTM
similarity to that artist's reference songs (the training songs stored in the checkpoint, or --sources).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from jsonargparse.typing import PositiveInt

from ..options import check_types
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

    def lookup(self, name: str) -> int | None:
        """The artist `name` names after normalisation (so collab's "X (B)" is X), or None."""
        wanted = normalise(name)
        return next((k for k, a in enumerate(self.artists) if normalise(a) == wanted), None)


def score_collab(model, vocab, refs: References, collab: dict) -> dict:
    """Every segment's similarity to each author; attribution accuracy over the segments one author wrote.

    A primetext segment or the single "A + B" part of blend/condition is scored but not attributed, and an
    author label with no reference songs (e.g. a run folder name) gets no column instead of an error."""
    segments = collab.get("segments")
    authors = collab.get("authors") or sorted({str(s.get("author", "")) for s in segments or []})
    if not isinstance(segments, list) or not segments or len(authors) < 2:
        raise LyricdistError("the collaboration JSON needs 'segments' [{author, text}, ...] and two 'authors'")
    authors = [str(a) for a in authors]
    columns = {a: refs.lookup(a) for a in authors}
    known = [a for a in authors if columns[a] is not None]
    texts = [str(s.get("text", "")) for s in segments]
    scores = refs.artist_scores(encode_texts(model, vocab, texts)) if known else None
    rows, attributed, correct = [], 0, 0
    for k, (seg, text) in enumerate(zip(segments, texts)):
        author = str(seg.get("author", ""))
        similarity = {a: float(scores[k, columns[a]]) for a in known} if known else {}
        closer = max(known, key=similarity.get) if known else None
        match = None
        if author in known:  # written by one author alone, who has reference songs
            match = columns[closer] == columns[author]
            attributed += 1
            correct += match
        rows.append({"author": seg.get("author"), "similarity": similarity, "closer_to": closer,
                     "matches_author": match, "text": text})
    return {
        "authors": authors,
        "unknown_authors": [a for a in authors if columns[a] is None],
        "segments": rows,
        "attributed_segments": attributed,
        "attribution_accuracy": correct / attributed if attributed else None,
    }


def nearest_artists(model, vocab, refs: References, text: str, top: int) -> dict:
    row = refs.artist_scores(encode_texts(model, vocab, [text]))[0]
    order = torch.argsort(row, descending=True)[:top].tolist()
    return {"nearest": [{"artist": refs.artists[k], "similarity": float(row[k])} for k in order]}


def score(checkpoint: str, input_path: str, sources: list[str] | None = None, top: PositiveInt = 5) -> dict:
    """Per segment of a `lyricdist collab` JSON, similarity to each author; for a text, the nearest artists.

    Args:
        checkpoint: a `similarity train` out_dir or checkpoint directory
        input_path: a collaboration JSON or a plain text file
        sources: reference songs (default: the checkpoint's)
        top: nearest artists listed for a plain text
    """
    check_types(score, locals())
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
    authors = [a for a in result["authors"] if a not in result.get("unknown_authors", [])]
    lines = [f"{'#':>3}  {'written by':<24} " + " ".join(f"{a[:12]:>12}" for a in authors) + "  closer to"]
    lines.append("-" * len(lines[0]))
    for k, r in enumerate(result["segments"], 1):
        mark = {True: "", False: "  (other style)", None: "  (not attributed)"}[r["matches_author"]]
        sims = " ".join(f"{r['similarity'][a]:>12.3f}" for a in authors)
        lines.append(f"{k:>3}  {str(r['author'])[:24]:<24} {sims}  {r['closer_to'] or '-'}{mark}")
    for a in result.get("unknown_authors", []):
        lines.append(f"no reference songs for {a!r}: its segments are not attributed (pass --sources to add them)")
    accuracy = result["attribution_accuracy"]
    shown = "n/a (no segment has a single author with reference songs)" if accuracy is None else f"{accuracy:.0%}"
    lines.append(f"segments that read like their author: {shown} of {result['attributed_segments']}")
    return "\n".join(lines)
