"""sample: continue a primetext with a trained model (batched; one row per temperature and sample)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from .checkpoint import artist_index, load_checkpoint
from .options import check_types, listed
from .errors import LyricdistError
from .model import CharRNN
from .precision import use_for_inference
from .generate import DEFAULT_GUIDANCE, generate, prime_ids
from .vocab import Vocab


def artist_vector(
    model: CharRNN, artists: list[str], artist: str | None, artist_mix: str | None = None, alpha: float = 0.5
) -> torch.Tensor | None:
    """The artist embedding to write as: `artist`'s, or (1-alpha) e_artist + alpha e_mix with `artist_mix`.

    A conditioned model sampled without an artist writes as the mean of its artists' embeddings (with a warning):
    artist 0 alone would silently pick whichever artist sorted first."""
    if model.artist_embed is None:
        if artist is not None or artist_mix is not None:
            raise LyricdistError("--artist needs an artist-conditioned model (model.artist_embedding_dim > 0)")
        return None
    table = model.artist_embed.weight.detach()

    def row(name: str) -> torch.Tensor:
        i = artist_index(artists, name)
        if i is None:
            raise LyricdistError(f"artist {name!r} not in this model; choose one of {artists}")
        return table[i]

    if artist is None:
        if artist_mix is not None:
            raise LyricdistError("--artist_mix needs --artist: the mix is (1-alpha) * artist + alpha * artist-mix")
        n = max(model.num_artists, 1)
        print(f"warning: this model is artist-conditioned and no --artist was given; writing as the mean of its "
              f"{n} artists' embeddings (pass --artist NAME, one of {artists})", file=sys.stderr)
        return table[:n].mean(0)
    if artist_mix is None:
        return row(artist)
    if not 0 <= alpha <= 1:
        raise LyricdistError(f"--alpha must be in [0, 1], got {alpha}")
    return (1 - alpha) * row(artist) + alpha * row(artist_mix)


def voice_label(artists: list[str], artist: str | None, artist_mix: str | None, alpha: float,
                against: str | None = None, guidance: float = 0.0) -> str | None:
    """Who a sample writes as, in words: `Gulzar`, `0.7 Gulzar + 0.3 Anand Bakshi`, `... (guided away from X, w=2)`."""
    if artist is None and not artists:
        return None
    if artist is None:
        label = "mean of " + ", ".join(artists)
    elif artist_mix is None:
        label = artist
    else:
        label = f"{1 - alpha:g} {artist} + {alpha:g} {artist_mix}"
    if against is not None and guidance > 0:
        label += f" (guided away from {against}, w={guidance:g})"
    return label


@dataclass
class SampleResult:
    temperature: float
    index: int
    primetext: str
    text: str
    artist: str | None = None  # who it writes as (artist-conditioned models)


def sample(
    checkpoint: str,
    primetext: str = "",
    length: PositiveInt = 500,
    temperature: PositiveFloat | Sequence[PositiveFloat] = 1.0,
    top_k: NonNegativeInt = 0,
    num_samples: PositiveInt = 1,
    seed: int = 0,
    argmax: bool = False,
    drop_unknown: bool = False,
    device: str = "cpu",
    artist: str | None = None,
    artist_mix: str | None = None,
    alpha: ClosedUnitInterval = 0.5,
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto",
    against: str | None = None,
    guidance: NonNegativeFloat = DEFAULT_GUIDANCE,
) -> list[SampleResult]:
    """Generate text from a checkpoint: `num_samples` texts for each temperature, deterministic for a given seed.

    Without a primetext the model starts from a newline, which is not part of the text (no leading blank line).

    Args:
        checkpoint: a checkpoint directory, a run's out_dir (its best), hf:REPO[@REV] or wandb:ENTITY/PROJECT/NAME:ALIAS
        primetext: text to continue
        length: characters to generate
        temperature: one, or several as a list: 0.8, or '[0.2, 0.5, 1.0]' (one sample each)
        top_k: sample among the k likeliest characters (0 = all)
        num_samples: samples per temperature (one batch)
        seed: same seed, same text
        argmax: greedy decoding instead of sampling
        drop_unknown: drop primetext characters not in the vocabulary
        device: cpu, cuda, cuda:1, ...
        artist: artist to write as (artist-conditioned models)
        artist_mix: a second artist to blend into --artist
        alpha: weight of --artist_mix: (1-alpha) artist + alpha mix
        mixed_precision: the RNN's dtype, chosen as in training (auto: bf16 where native and fused, else fp32)
        against: an artist to steer away from: logits + w * (logits - logits as --against)
        guidance: w of --against (0 = off; the default is lyricdist.generate.DEFAULT_GUIDANCE, chosen by
            scripts/bench/collab_quality.py)
    """
    check_types(sample, locals())
    temperature = [temperature] if isinstance(temperature, (int, float)) else list(temperature)
    if not argmax and not temperature:
        raise LyricdistError("--temperature needs at least one value; use --argmax true for greedy decoding")
    model, vocab, config = load_checkpoint(checkpoint, device=device)
    use_for_inference(model, device, mixed_precision)
    return sample_from(model, vocab, config, primetext, length, temperature, top_k, num_samples, seed, argmax,
                       drop_unknown, artist, artist_mix, alpha, against, guidance)


def sample_from(model: CharRNN, vocab: Vocab, config: dict, primetext: str = "", length: int = 500,
                temperature: Sequence[float] = (1.0,), top_k: int = 0, num_samples: int = 1, seed: int = 0,
                argmax: bool = False, drop_unknown: bool = False, artist: str | None = None,
                artist_mix: str | None = None, alpha: float = 0.5, against: str | None = None,
                guidance: float = 0.0) -> list[SampleResult]:
    """`sample` on a loaded model (its config.json as `config`), set up for inference by the caller: the same
    seed gives the same text as `lyricdist sample` (lyricdist.pretrained.LyricsModel.generate uses it)."""
    temps = [1.0] if argmax else list(temperature)
    ids = prime_ids(vocab, primetext, drop_unknown)
    if not ids:
        ids = [vocab.chars.index("\n")] if "\n" in vocab else [0]
    if against is not None and artist is None:
        raise LyricdistError("--against needs --artist: guidance steers --artist away from --against")
    names = config.get("artists", []) if model.artist_embed is not None else []
    vec = artist_vector(model, names, artist, artist_mix, alpha)
    kw = {} if vec is None else {"artist_vec": vec}
    if against is not None:
        kw |= {"against_vec": artist_vector(model, names, against), "guidance": guidance}
    rows = [(t, i) for t in temps for i in range(num_samples)]
    gen = torch.Generator().manual_seed(seed)
    outs = generate(model, ids, length, [t for t, _ in rows], top_k=top_k, argmax=argmax, generator=gen, **kw)
    prime = vocab.decode(ids) if primetext else ""
    label = voice_label(names, artist, artist_mix, alpha, against, guidance)
    texts = [prime + vocab.decode(o) for o in outs]
    texts = [t if prime else t.lstrip("\n") for t in texts]
    return [SampleResult(t, i, prime, text, label) for (t, i), text in zip(rows, texts)]


def cli_parser():
    from .memorization import check_options
    from .options import function_parser

    p = function_parser(sample, more=(check_options,))
    p.add_argument("--json", type=bool, default=False, help="print JSON lines instead of text (type: bool)")
    return p


def cli_run(parser, args) -> int:
    import json

    from .options import call

    if args.against is not None and args.guidance == 0:  # the API's w=0 is plain sampling; a command line asked more
        raise LyricdistError(f"--against steers only with --guidance > 0 (the default is {DEFAULT_GUIDANCE:g}, measured "
                             f"by scripts/bench/collab_quality.py); pass e.g. --guidance 1, or drop --against")
    results = call(sample, args)
    reports: list = [None] * len(results)
    guided = args.against is not None and args.guidance > 0
    check = args.check_memorization if args.check_memorization is not None else guided
    unchecked = None
    if check:  # guided sampling is checked by default: its copying is part of the result
        from .memorization import check_texts, format_report, span_notice, training_corpus

        try:
            corpora = listed(args.corpus) or [training_corpus(args.checkpoint)]
        except LyricdistError as e:
            if args.check_memorization:
                raise
            unchecked = f"memorisation check not run: {e}"
            print(f"note: guided sampling, but the {unchecked}", file=sys.stderr)
        else:
            texts = [r.text[len(r.primetext) :] for r in results]
            reports = check_texts(texts, corpora, args.max_span, args.max_ngram_share)
    if results[0].artist and not args.json:
        print(f"writing as {results[0].artist}", file=sys.stderr)
    for r, report in zip(results, reports):
        # A copied word span past the real held-out songs' 90th percentile, of the artist written as (or any).
        mine = [row for row in report or [] if args.artist and row["artist"].casefold() == args.artist.casefold()]
        past = [row for row in (mine or report or []) if row["past_heldout_p90"]]
        if args.json:
            extra = {"memorization": report} if report is not None else {}
            extra |= {"memorization_error": unchecked} if unchecked else {}
            print(json.dumps({**r.__dict__, **extra}, ensure_ascii=False))
        else:
            if len(results) > 1:
                print(f"--- temperature {r.temperature}, sample {r.index + 1} ---")
            print(r.text)
            for row in past:  # stdout stays the text alone
                which = f"sample {r.index + 1} at temperature {r.temperature}" if len(results) > 1 else "the sample"
                print(f"notice: {which} {span_notice(row)}", file=sys.stderr)
            if report is not None:
                print(format_report(report), file=sys.stderr)
    return 0
