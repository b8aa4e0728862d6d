"""Generation primitives: encode a primetext, continue it (batched, with optional contrastive guidance), and the
progress samples a trainer logs. Below training and the generation commands (sample, collab, the app), which all
use them; they depend only on the model, the vocabulary and the errors a primetext can raise."""

from __future__ import annotations

import sys
from typing import Sequence

import torch

from .errors import LyricdistError
from .model import CharRNN
from .vocab import Vocab


# The default contrastive guidance w of `collab --model` and `sample --against`, chosen by measurement
# (scripts/bench/collab_quality.py, README "Two lyricists, one song"): the smallest w of the sweep 0, 0.25, 0.5, 1,
# 2, 4 at which single-author segments are attributed by an independent judge at least as often as real held-out
# segments, while copying no more word 5-grams than real held-out songs and keeping >= 95% of their share of corpus
# words. On both measured pairs (Anand Bakshi x Gulzar, Sahir x Majrooh; docs/collab-quality.md) a generator trained
# to quality is attributed above the real segments' rate unguided (92.5% vs 80.8%, 66.7% vs 63.4%); guidance raises
# attribution further but lowers fluency and likelihood and, on Gulzar, raises copying. So the default is off.
DEFAULT_GUIDANCE = 0.0


def prime_ids(vocab: Vocab, primetext: str, drop_unknown: bool = False) -> list[int]:
    """Encode a primetext; characters outside the vocabulary are an error unless `drop_unknown`."""
    if vocab.lowercase:
        primetext = primetext.lower()
    missing = vocab.missing(primetext)
    if missing:
        if not drop_unknown:
            raise LyricdistError(
                f"primetext characters not in the model's vocabulary: {''.join(missing)!r}; "
                f"remove them or pass --drop_unknown true"
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
