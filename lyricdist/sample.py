"""sample: continue a primetext with a trained model (batched; one row per temperature and sample)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from .checkpoint import artist_index, load_checkpoint
from .cli import check_ranges
from .collab import DEFAULT_GUIDANCE
from .errors import LyricdistError
from .model import CharRNN
from .precision import use_for_inference
from .vocab import Vocab


def prime_ids(vocab: Vocab, primetext: str, drop_unknown: bool = False) -> list[int]:
    """Encode a primetext; characters outside the vocabulary are an error unless `drop_unknown`."""
    if vocab.lowercase:
        primetext = primetext.lower()
    missing = vocab.missing(primetext)
    if missing:
        if not drop_unknown:
            raise LyricdistError(
                f"primetext characters not in the model's vocabulary: {''.join(missing)!r}; "
                f"remove them or pass --drop-unknown"
            )
        print(f"warning: dropped primetext characters not in the vocabulary: {''.join(missing)!r}", file=sys.stderr)
    return vocab.encode_known(primetext)


@torch.no_grad()
def generate(
    model: CharRNN,
    prime: Sequence[int],
    length: int,
    temperatures: Sequence[float],
    top_k: int = 0,
    argmax: bool = False,
    generator: torch.Generator | None = None,
    artist_vec: torch.Tensor | None = None,
    against_vec: torch.Tensor | None = None,
    guidance: float = 0.0,
) -> list[list[int]]:
    """Generate `length` ids for each temperature (one batch row each), continuing `prime`.

    With `against_vec` and `guidance` w > 0 (artist-conditioned models), each step's logits are
    l(artist) + w * (l(artist) - l(against)): contrastive guidance, which moves the text away from what the other
    artist would write as well. An artist embedding that shifts the loss by hundredths of a nat barely changes a
    sample; guidance turns that small shift into a visible one without retraining.
    Uses only `generator` for randomness, so sampling never moves the global (training) RNG streams.
    """
    was_training = model.training
    model.eval()
    try:
        device = model.head.weight.device
        n = len(temperatures)
        temps = torch.tensor(list(temperatures), dtype=torch.float32, device=device)[:, None]
        if not prime:
            prime = [0]
        x = torch.tensor([list(prime)] * n, dtype=torch.long, device=device)
        kw = {}
        guided = against_vec is not None and guidance > 0 and artist_vec is not None
        if artist_vec is not None:  # [D] or [n, D]: the artist (or blend of artists) to write as
            kw["artist_vec"] = artist_vec.to(device).reshape(-1, artist_vec.shape[-1]).expand(n, -1)
        if guided:  # rows n..2n-1 read the same text as the artist to steer away from
            other = against_vec.to(device).reshape(-1, against_vec.shape[-1]).expand(n, -1)
            kw["artist_vec"] = torch.cat([kw["artist_vec"], other])
            x = torch.cat([x, x])

        def mix(logits: torch.Tensor) -> torch.Tensor:
            last = logits[:, -1].float()
            return (1 + guidance) * last[:n] - guidance * last[n:] if guided else last

        logits, state = model(x, None, **kw)
        last = mix(logits)
        out: list[list[int]] = [[] for _ in range(n)]
        for _ in range(length):
            if argmax:
                nxt = last.argmax(-1)
            else:
                scaled = last / temps
                if top_k and top_k < scaled.shape[-1]:
                    kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
                    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
                probs = torch.softmax(scaled, dim=-1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).flatten().to(device)
            for i, t in enumerate(nxt.tolist()):
                out[i].append(t)
            step_in = torch.cat([nxt, nxt]) if guided else nxt
            logits, state = model(step_in[:, None], state, **kw)
            last = mix(logits)
        return out
    finally:
        model.train(was_training)


def progress_samples(
    model: CharRNN,
    vocab: Vocab,
    artists: list[str],
    primetexts: Sequence[str],
    length: int,
    temperatures: Sequence[float],
    seed: int,
    max_artists: int,
) -> list[dict]:
    """Samples a trainer logs at each evaluation: every primetext at every temperature. An artist-conditioned model
    writes as each of its artists (up to `max_artists`; more are represented by their mean embedding), and each row
    says which. Unknown primetext characters are dropped (the trainer warned once at start-up)."""
    gen = torch.Generator().manual_seed(seed)
    voices: list[tuple[str | None, torch.Tensor | None]] = [(None, None)]
    if model.artist_embed is not None:
        table = model.artist_embed.weight.detach()
        names = list(artists)[: model.num_artists] or ["artist 0"]
        if len(names) <= max_artists:
            voices = [(name, table[i]) for i, name in enumerate(names)]
        else:
            voices = [(f"mean of {len(names)} artists", table[: len(names)].mean(0))]
    rows = []
    for prime in primetexts:
        ids = vocab.encode_known(prime)
        for artist, vec in voices:
            outs = generate(model, ids, length, temperatures, generator=gen, artist_vec=vec)
            for temp, o in zip(temperatures, outs):
                row = {"primetext": prime, "temperature": temp, "text": vocab.decode(o)}
                rows.append(row if artist is None else {**row, "artist": artist})
    return rows


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
            raise LyricdistError("--artist-mix needs --artist: the mix is (1-alpha) * artist + alpha * artist-mix")
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
    temperature: Sequence[PositiveFloat] = (1.0,),
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
        temperature: one or more, e.g. 0.2 0.5 1.0 1.2
        top_k: sample among the k likeliest characters (0 = all)
        num_samples: samples per temperature (one batch)
        seed: same seed, same text
        argmax: greedy decoding instead of sampling
        drop_unknown: drop primetext characters not in the vocabulary
        device: cpu, cuda, cuda:1, ...
        artist: artist to write as (artist-conditioned models)
        artist_mix: a second artist to blend into --artist
        alpha: weight of --artist-mix: (1-alpha) artist + alpha mix
        mixed_precision: the RNN's dtype, chosen as in training (auto: bf16 where native and fused, else fp32)
        against: an artist to steer away from: logits + w * (logits - logits as --against)
        guidance: w of --against (0 = off; the default is lyricdist.collab.DEFAULT_GUIDANCE, chosen by
            scripts/bench/collab_quality.py)
    """
    check_ranges(sample, locals())
    temps = [1.0] if argmax else list(temperature)
    if not temps:
        raise LyricdistError("--temperature needs at least one value; use --argmax for greedy decoding")
    model, vocab, config = load_checkpoint(checkpoint, device=device)
    use_for_inference(model, device, mixed_precision)
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
    from .cli import add_signature_options, function_parser
    from .memorization import check_options

    p = function_parser(sample)
    p.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    add_signature_options(p, check_options)
    return p


def cli_run(parser, args) -> int:
    import json

    from .cli import call

    results = call(sample, args)
    reports: list = [None] * len(results)
    guided = args.against is not None and args.guidance > 0
    check = args.check_memorization if args.check_memorization is not None else guided
    unchecked = None
    if check:  # guided sampling is checked by default: its copying is part of the result
        from .memorization import check_texts, format_report, span_notice, training_corpus

        try:
            corpora = args.corpus or [training_corpus(args.checkpoint)]
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
