"""collab: a song written by two artists' models.

A and B are two checkpoints (e.g. two per-artist fine-tunes of one base model), or, with `--model CKPT`, two
artist names of one artist-conditioned model. Modes:

* alternate -- the original project's method: A writes `--lines` lines, then B continues with A's last
  `--context-lines` lines as its primetext, and so on for `--turns` turns.
* blend -- every next character is drawn from a mix of both models' distributions, each at `--temperature`:
  `--rule product` (default): p ~ pA^(1-alpha) * pB^alpha, renormalised (geometric mean: a character must
  suit both artists); `--rule mixture`: p = (1-alpha) pA + alpha pB (either artist may pick it). Only
  characters both vocabularies hold can be drawn, so each model can always read the text.
* condition -- one artist-conditioned model fed the interpolated embedding (1-alpha) eA + alpha eB.

`--guidance W` (alternate mode) steers each author away from the other: the next-character logits are
lA + W (lA - lB), lB being the other author reading the same text (the other artist's embedding of a conditioned
model, or the other checkpoint when both share a vocabulary). A conditioned model whose artist embedding moves the
loss by hundredths of a nat writes near-identical text for both artists; guidance amplifies exactly that
difference at sampling time, so each turn reads like its author without retraining (measured by
scripts/bench/collab_quality.py).

Blend and condition write `--turns` x `--lines` lines as one part credited to both artists. All randomness comes
from one generator seeded by `--seed`: same seed, same song.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from .checkpoint import artist_index, load_checkpoint, resolve_checkpoint_dir
from .cli import check_ranges
from .precision import use_for_inference
from .errors import LyricdistError
from .fileio import atomic_write_json
from .model import CharRNN
from .vocab import Vocab

Mode = Literal["alternate", "blend", "condition"]
Rule = Literal["product", "mixture"]
MODES = get_args(Mode)
MAX_LINE_CHARS = 200  # a "line" that never ends is cut here, so a turn always finishes
# The default contrastive guidance w of `collab --model` and `sample --against`, chosen by measurement
# (scripts/bench/collab_quality.py, README "Two lyricists, one song"): the smallest w of the sweep 0, 0.5, 1, 2, 4
# at which single-author segments are attributed by the independent judge at least as often as real held-out
# segments, while copying no more word 5-grams than real held-out songs and keeping >= 95% of their share of
# corpus words. MEASURED_BELOW
DEFAULT_GUIDANCE = 0.5


@dataclass
class Author:
    name: str
    model: CharRNN
    vocab: Vocab
    artist_vec: torch.Tensor | None = None


class Voice:
    """One author reading and writing character by character (the recurrent state carried between steps).

    With `against` (another author with the same vocabulary) and `guidance` w > 0 it reads every character twice
    and draws from lA + w (lA - l_against)."""

    def __init__(self, author: Author, temperature: float, against: Author | None = None, guidance: float = 0.0):
        self.author = author
        self.temperature = temperature
        self.state = None
        self.last: torch.Tensor | None = None
        self.guide = Voice(against, temperature) if against is not None and guidance > 0 else None
        self.guidance = guidance

    def _run(self, ids: list[int]) -> None:
        model = self.author.model
        x = torch.tensor([ids], dtype=torch.long, device=model.head.weight.device)
        kw = {} if self.author.artist_vec is None else {"artist_vec": self.author.artist_vec[None]}
        logits, self.state = model(x, self.state, **kw)
        self.last = logits[0, -1].float().cpu()

    def prime(self, text: str) -> None:
        """Start afresh reading `text`; characters this author's vocabulary lacks are skipped."""
        vocab = self.author.vocab
        ids = vocab.encode_known(text)
        if not ids:
            ids = [vocab.id_of("\n")] if "\n" in vocab else [0]
        self.state = None
        self._run(ids)
        if self.guide is not None:
            self.guide.prime(text)

    def logits(self) -> torch.Tensor:
        if self.guide is None:
            return self.last
        return (1 + self.guidance) * self.last - self.guidance * self.guide.last

    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits() / self.temperature, dim=-1)

    def feed(self, char: str) -> None:
        self._run([self.author.vocab.id_of(char)])
        if self.guide is not None:
            self.guide.feed(char)

    def step(self, generator: torch.Generator) -> str:
        """Draw the next character from this author alone and read it."""
        char = self.author.vocab.chars[_sample_from(self.probs(), generator)]
        self.feed(char)
        return char


def _write_lines(n_lines: int, generator: torch.Generator, step) -> str:
    """Call `step(generator) -> char` (draw a character and feed it back) until `n_lines` non-blank lines end."""
    out: list[str] = []
    line: list[str] = []
    done = 0
    for _ in range(n_lines * MAX_LINE_CHARS):
        ch = step(generator)
        out.append(ch)
        line.append(ch)
        if ch == "\n":
            done += bool("".join(line).strip())
            line = []
            if done >= n_lines:
                break
    text = "".join(out)
    return text if text.endswith("\n") else text + "\n"


def _sample_from(probs: torch.Tensor, generator: torch.Generator) -> int:
    return int(torch.multinomial(probs, 1, generator=generator))


def _last_lines(text: str, n: int) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[-n:]) if n > 0 else ""


def _label(path: str, config: dict) -> str:
    artists = config.get("artists") or []
    if len(artists) == 1:
        return artists[0]
    p = resolve_checkpoint_dir(path)
    return p.parent.parent.name if p.name in ("best", "last") and p.parent.name == "checkpoints" else p.name


def load_authors(a: str, b: str, model: str | None, device: str = "cpu") -> tuple[Author, Author]:
    """Two checkpoints, or two artists of one conditioned model (`model`)."""
    if model is None:
        authors = []
        for path in (a, b):
            m, vocab, config = load_checkpoint(path, device=device)
            use_for_inference(m, device)
            authors.append(Author(_label(path, config), m, vocab))
        if authors[0].name == authors[1].name:
            authors[1].name += " (B)"
        return authors[0], authors[1]
    m, vocab, config = load_checkpoint(model, device=device)
    use_for_inference(m, device)
    artists = config.get("artists", [])
    if m.artist_embed is None:
        raise LyricdistError(f"--model {model} is not artist-conditioned (model.artist_embedding_dim is 0)")
    found = []
    for name in (a, b):
        i = artist_index(artists, name)
        if i is None:
            raise LyricdistError(f"artist {name!r} is not in --model {model}; choose from {artists}")
        found.append(Author(artists[i], m, vocab, m.artist_embed.weight[i].detach()))
    return found[0], found[1]


def collab(
    a: str,
    b: str,
    mode: Mode = "alternate",
    model: str | None = None,
    turns: PositiveInt = 4,
    lines: PositiveInt = 4,
    context_lines: NonNegativeInt = 2,
    alpha: ClosedUnitInterval = 0.5,
    rule: Rule = "product",
    temperature: PositiveFloat = 0.8,
    primetext: str = "",
    seed: int = 0,
    device: str = "cpu",
    guidance: NonNegativeFloat | None = None,
) -> dict:
    """Write a song with two artists: two checkpoints, or two artists of one conditioned model.

    Returns {"segments": [{"author", "text"}], "authors", "mode", "settings", "seed"}.

    Args:
        a: artist A: a checkpoint (dir, run, hf:, wandb:), or an artist name of --model
        b: artist B: a checkpoint (dir, run, hf:, wandb:), or an artist name of --model
        mode: alternate (turns), blend (both models' distributions) or condition (interpolated artist embedding)
        model: an artist-conditioned checkpoint; A and B name two of its artists
        turns: alternate: turns; blend/condition: turns x lines lines
        lines: lines per turn
        context_lines: alternate: last lines of the song each turn continues
        alpha: blend/condition: weight of B (0 = all A, 1 = all B)
        rule: blend rule: product (geometric, renormalised) or mixture
        temperature: sampling temperature of each model
        primetext: opening text of the song
        seed: same seed, same song
        device: cpu, cuda, ...
        guidance: alternate: steer each author away from the other, lA + w (lA - lB) (0 = off; default:
            DEFAULT_GUIDANCE with --model, measured on a conditioned model; 0 for two checkpoints)
    """
    check_ranges(collab, locals())
    if guidance is None:  # guidance steers alternate turns only
        guidance = DEFAULT_GUIDANCE if model is not None and mode == "alternate" else 0.0
    if mode == "condition" and model is None:
        raise LyricdistError(
            "--mode condition needs an artist-conditioned model: --model CKPT with A and B artist names"
        )
    author_a, author_b = load_authors(a, b, model, device)
    if guidance > 0 and author_a.vocab.chars != author_b.vocab.chars:
        raise LyricdistError("--guidance needs both models to share one vocabulary (e.g. fine-tunes of one base)")
    gen = torch.Generator().manual_seed(seed)
    segments = [{"author": "primetext", "text": primetext}] if primetext else []
    song = primetext

    with torch.no_grad():
        if mode == "alternate":
            for turn in range(turns):
                author, other = ((author_a, author_b), (author_b, author_a))[turn % 2]
                voice = Voice(author, temperature, other, guidance)
                voice.prime(_last_lines(song, context_lines) if song else "")
                text = _write_lines(lines, gen, voice.step)
                segments.append({"author": author.name, "text": text})
                song += text
        else:
            if mode == "condition":
                vec = (1 - alpha) * author_a.artist_vec + alpha * author_b.artist_vec
                blended = Author(author_a.name, author_a.model, author_a.vocab, vec)
                voice = Voice(blended, temperature)
                voice.prime(song)
                text = _write_lines(lines * turns, gen, voice.step)
            else:
                text = _blend(author_a, author_b, song, lines * turns, alpha, rule, temperature, gen)
            segments.append({"author": f"{author_a.name} + {author_b.name}", "text": text})
    return {
        "segments": segments,
        "authors": [author_a.name, author_b.name],
        "mode": mode,
        "settings": {
            "a": a,
            "b": b,
            "model": model,
            "turns": turns,
            "lines": lines,
            "context_lines": context_lines,
            "alpha": alpha,
            "rule": rule,
            "temperature": temperature,
            "primetext": primetext,
            "guidance": guidance,
        },
        "seed": seed,
    }


def blend_probs(pa: torch.Tensor, pb: torch.Tensor, alpha: float, rule: str) -> torch.Tensor:
    """The blended next-character distribution over aligned (common-character) distributions, renormalised."""
    if rule == "product":
        p = torch.exp((1 - alpha) * torch.log(pa.clamp_min(1e-30)) + alpha * torch.log(pb.clamp_min(1e-30)))
    else:
        p = (1 - alpha) * pa + alpha * pb
    return p / p.sum()


def _blend(
    a: Author, b: Author, prime: str, n_lines: int, alpha: float, rule: str, temperature: float, gen
) -> str:
    common = [c for c in a.vocab.chars if c in b.vocab]
    if not common:
        raise LyricdistError("the two models share no characters; blend needs a common vocabulary")
    ia = torch.tensor([a.vocab.id_of(c) for c in common])
    ib = torch.tensor([b.vocab.id_of(c) for c in common])
    va, vb = Voice(a, temperature), Voice(b, temperature)
    va.prime(prime)
    vb.prime(prime)

    def step(g) -> str:
        ch = common[_sample_from(blend_probs(va.probs()[ia], vb.probs()[ib], alpha, rule), g)]
        va.feed(ch)
        vb.feed(ch)
        return ch

    return _write_lines(n_lines, gen, step)


def format_song(result: dict) -> str:
    """The song with each part under its author's label; a part that copies a word span longer than its author's
    real held-out songs' 90th percentile (result["memorization"], see song_memorization) says so in its label."""
    from .memorization import span_notice

    flagged = {row["segment"]: row for row in (result.get("memorization") or {}).get("segments", [])
               if row["past_heldout_p90"]}
    parts = [f"[{s['author']}]" + (f" ({span_notice(flagged[k])})" if k in flagged else "") + f"\n{s['text']}"
             for k, s in enumerate(result["segments"])]
    return "\n".join(p if p.endswith("\n") else p + "\n" for p in parts)


def cli_parser():
    from .cli import add_signature_options, function_parser
    from .memorization import check_options

    p = function_parser(collab)
    p.add_argument("--out", type=str | None, default=None, help="also write the song as JSON to this file")
    add_signature_options(p, check_options)
    return p


def cli_run(parser, args) -> int:
    from .cli import call

    result = call(collab, args)
    guided = result["settings"]["guidance"] > 0 and result["mode"] == "alternate"
    check = args.check_memorization if args.check_memorization is not None else guided
    if check:  # guided sampling is checked by default: its copying is part of the result
        from .memorization import format_report, song_memorization, training_corpus

        try:
            corpora = args.corpus or [training_corpus(p) for p in ([args.model] if args.model else [args.a, args.b])]
        except LyricdistError as e:
            if args.check_memorization:
                raise
            result["memorization"] = {"error": f"memorisation check not run: {e}"}
            print(f"note: guided sampling, but the {result['memorization']['error']}", file=sys.stderr)
        else:
            result["memorization"] = song_memorization(result["segments"], corpora, args.max_span,
                                                       args.max_ngram_share)
    print(format_song(result), end="")
    if "rows" in result.get("memorization", {}):
        print(format_report(result["memorization"]["rows"]), file=sys.stderr)
    if args.out:
        atomic_write_json(Path(args.out), result)
    return 0
