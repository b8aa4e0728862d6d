"""collab: a song written by two artists' models.

A and B are two checkpoints (e.g. two per-artist fine-tunes of one base model), or, with `--model CKPT`, two
artist names of one artist-conditioned model. Modes:

* alternate -- the original project's method: A writes `--lines` lines, then B continues with A's last
  `--context_lines` lines as its primetext, and so on for `--turns` turns.
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

`collab_stream` writes the song character by character, yielding it as it grows; `collab` is that stream run to
its end, so a page that shows the stream (lyricdist.app) writes the same song as the command line, once.
"""

from __future__ import annotations

import collections
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, get_args

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from .checkpoint import artist_index, load_checkpoint, resolve_checkpoint_dir
from .options import check_types, listed
from .precision import use_for_inference
from .errors import LyricdistError
from .fileio import atomic_write_json
from .generate import DEFAULT_GUIDANCE
from .model import CharRNN
from .vocab import Vocab

Mode = Literal["alternate", "blend", "condition"]
Rule = Literal["product", "mixture"]
MODES = get_args(Mode)
MAX_LINE_CHARS = 200  # a "line" that never ends is cut here, so a turn always finishes


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

    @torch.no_grad()  # per call: a `with` around a generator's yields would leak no_grad into its consumer
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


def _lines(n_lines: int, generator: torch.Generator, step: Callable[[torch.Generator], str]) -> Iterator[str]:
    """Yield `step(generator)` (draw a character and feed it back) until `n_lines` non-blank lines end; the text
    always ends with a newline (one is added after MAX_LINE_CHARS characters a line)."""
    line: list[str] = []
    done, last = 0, ""
    for _ in range(n_lines * MAX_LINE_CHARS):
        last = step(generator)
        yield last
        line.append(last)
        if last == "\n":
            done += bool("".join(line).strip())
            line = []
            if done >= n_lines:
                return
    if last != "\n":
        yield "\n"


def _write_lines(n_lines: int, generator: torch.Generator, step) -> str:
    """The text of `_lines`, at once."""
    return "".join(_lines(n_lines, generator, step))


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

    Returns {"segments": [{"author", "text"}], "authors", "mode", "settings", "seed"}: the last song
    `collab_stream` yields with the same arguments.

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
    check_types(collab, locals())
    stream = collab_stream(a, b, mode, model, turns, lines, context_lines, alpha, rule, temperature, primetext, seed,
                           device, guidance)
    last = collections.deque(stream, maxlen=1)  # the stream's last snapshot is the song
    return last[0] if last else None


def collab_stream(
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
    authors: tuple[Author, Author] | None = None,
) -> Iterator[dict]:
    """`collab` as it is written: yields the song (collab's dict) once set up (the primetext part, if any, and the
    authors), then after every character generated; the last one yielded is collab's result. It is one dict,
    updated in place (a part's text grows, parts are appended): copy what you keep. Stopping early is stopping
    the iteration. Arguments as collab's; `authors`: the two authors already loaded (load_authors), e.g. by a
    server that writes many songs with the same models."""
    check_types(collab_stream, locals())
    if guidance is None:  # guidance steers alternate turns only
        guidance = DEFAULT_GUIDANCE if model is not None and mode == "alternate" else 0.0
    if mode == "condition" and model is None:
        raise LyricdistError(
            "--mode condition needs an artist-conditioned model: --model CKPT with A and B artist names"
        )
    author_a, author_b = authors or load_authors(a, b, model, device)
    if guidance > 0 and author_a.vocab.chars != author_b.vocab.chars:
        raise LyricdistError("--guidance needs both models to share one vocabulary (e.g. fine-tunes of one base)")
    gen = torch.Generator().manual_seed(seed)
    segments = [{"author": "primetext", "text": primetext}] if primetext else []
    song = {
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
    if mode == "alternate":
        yield song  # set up: the authors, the primetext part (if any)
        for turn in range(turns):
            author, other = ((author_a, author_b), (author_b, author_a))[turn % 2]
            written = "".join(s["text"] for s in segments)
            voice = Voice(author, temperature, other, guidance)
            voice.prime(_last_lines(written, context_lines) if written else "")
            yield from _stream_part(song, author.name, _lines(lines, gen, voice.step))
        return
    if mode == "condition":
        vec = (1 - alpha) * author_a.artist_vec + alpha * author_b.artist_vec
        voice = Voice(Author(author_a.name, author_a.model, author_a.vocab, vec), temperature)
        voice.prime(primetext)
        step = voice.step
    else:
        step = _blend_step(author_a, author_b, primetext, alpha, rule, temperature)
    yield song
    yield from _stream_part(song, f"{author_a.name} + {author_b.name}", _lines(lines * turns, gen, step))


def _stream_part(song: dict, author: str, chars: Iterator[str]) -> Iterator[dict]:
    """Append a part by `author` to `song` and grow it by `chars`, yielding the song after each character."""
    part = {"author": author, "text": ""}
    song["segments"].append(part)
    for ch in chars:
        part["text"] += ch
        yield song


def blend_probs(pa: torch.Tensor, pb: torch.Tensor, alpha: float, rule: str) -> torch.Tensor:
    """The blended next-character distribution over aligned (common-character) distributions, renormalised."""
    if rule == "product":
        p = torch.exp((1 - alpha) * torch.log(pa.clamp_min(1e-30)) + alpha * torch.log(pb.clamp_min(1e-30)))
    else:
        p = (1 - alpha) * pa + alpha * pb
    return p / p.sum()


def _blend_step(a: Author, b: Author, prime: str, alpha: float, rule: str, temperature: float):
    """The blend's `step(generator) -> char`: both authors read `prime`, then every character drawn from the blended
    distribution over the characters both know, and read by both."""
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

    return step


def _blend(
    a: Author, b: Author, prime: str, n_lines: int, alpha: float, rule: str, temperature: float, gen
) -> str:
    return _write_lines(n_lines, gen, _blend_step(a, b, prime, alpha, rule, temperature))


def format_song(result: dict) -> str:
    """The song with each part under its author's label; a part that copies a word span longer than its author's
    real held-out songs' 90th percentile (result["memorization"], see song_memorization) says so in its label."""
    from .memorization import flagged_segments, span_notice

    flagged = flagged_segments(result.get("memorization"))
    parts = [f"[{s['author']}]" + (f" ({span_notice(flagged[k])})" if k in flagged else "") + f"\n{s['text']}"
             for k, s in enumerate(result["segments"])]
    return "\n".join(p if p.endswith("\n") else p + "\n" for p in parts)


def cli_parser():
    from .memorization import check_options
    from .options import function_parser

    p = function_parser(collab, more=(check_options,))
    p.add_argument("--out", type=str | None, default=None, help="also write the song as JSON to this file")
    return p


def cli_run(parser, args) -> int:
    from .options import call

    result = call(collab, args)
    guided = result["settings"]["guidance"] > 0 and result["mode"] == "alternate"
    check = args.check_memorization if args.check_memorization is not None else guided
    if check:  # guided sampling is checked by default: its copying is part of the result
        from .memorization import format_report, song_memorization, training_corpus

        try:
            corpora = listed(args.corpus) or [training_corpus(p) for p in ([args.model] if args.model else [args.a, args.b])]
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
