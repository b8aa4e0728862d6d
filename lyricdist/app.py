"""app: a local web app (Gradio) for two-artist collaborations -- `lyricdist collab` with controls.

    lyricdist app CKPT_A CKPT_B            # two checkpoints (e.g. two per-artist fine-tunes)
    lyricdist app CONDITIONED_CKPT         # two artists of one artist-conditioned model
    lyricdist app ... --similarity RUN     # also show each part's style attribution (a `similarity train` run)

The page writes the song with lyricdist.collab's own `collab()`, so the same seed gives the same song as the CLI
(the downloadable JSON is what `lyricdist collab --out` writes). Parts stream in as they are written: an
alternate song of N turns is the first N turns of a longer one (one seeded generator, drawn in order), so the
page shows turn k by asking collab() for k turns. Checkpoints take every reference `sample` takes (local, hf:,
wandb:). A bad input (an unknown artist, a missing checkpoint) is shown as one line in the page.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .collab import MODES
from .errors import LyricdistError

EXTRA = "pip install 'lyricdist[app]'"


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local app phones nobody
    try:
        import gradio as gr
    except ModuleNotFoundError as e:
        if e.name != "gradio":
            raise
        raise LyricdistError(f"`lyricdist app` needs Gradio, which is not installed; install the app extra: {EXTRA}") from None
    return gr


@dataclass
class Studio:
    """What the page offers, checked once at start (every checkpoint loads; one alone must be conditioned). Each
    song is collab()'s own, which loads its checkpoints (remote ones are downloaded once per process)."""

    checkpoints: list[str]
    model: str | None = None  # one artist-conditioned checkpoint: A and B name two of its artists
    choices: list[tuple[str, str]] = field(default_factory=list)  # (shown, value) for the A and B pickers
    corpus: list[str] | None = None
    similarity: tuple | None = None  # (model, vocab, References)
    device: str = "cpu"

    @classmethod
    def open(cls, checkpoints: list[str], similarity: str | None = None, corpus: list[str] | None = None,
             device: str = "cpu") -> "Studio":
        from .checkpoint import load_checkpoint
        from .collab import _label

        if len(checkpoints) not in (1, 2):
            raise LyricdistError(f"give one artist-conditioned checkpoint or two checkpoints, not {len(checkpoints)}")
        studio = cls(list(checkpoints), corpus=corpus, device=device)
        configs = [load_checkpoint(c)[2] for c in checkpoints]  # a missing or broken checkpoint fails here
        if len(checkpoints) == 1:
            artists = configs[0].get("artists") or []
            if not configs[0]["model"].get("artist_embedding_dim") or len(artists) < 2:
                raise LyricdistError(f"{checkpoints[0]} is not artist-conditioned with two or more artists; give two "
                                     f"checkpoints, or a model trained with model.artist_embedding_dim > 0")
            studio.model = checkpoints[0]
            studio.choices = [(a, a) for a in artists]
        else:
            studio.choices = [(_label(c, cfg), c) for c, cfg in zip(checkpoints, configs)]
        if similarity:
            from .similarity.checkpoint import load_similarity_checkpoint
            from .similarity.score import References

            model, vocab, config, stored = load_similarity_checkpoint(similarity)
            studio.similarity = (model, vocab, References(config["artists"], stored["vectors"], stored["artist_ids"]))
        return studio

    # ---- one song --------------------------------------------------------------------------------------------
    def write(self, a: str, b: str, mode: str = "alternate", temperature: float = 0.8, turns: int = 4,
              lines: int = 4, alpha: float = 0.5, rule: str = "product", seed: int = 0, primetext: str = "",
              context_lines: int = 2) -> Iterator[dict]:
        """Yield the song as it grows ({"song": collab()'s dict}), then the finished song with its memorisation
        report and similarity attribution. Raises LyricdistError for bad input."""
        from .collab import collab

        if not a or not b:
            raise LyricdistError("pick two artists (A and B)")
        kw = dict(mode=mode, model=self.model, lines=int(lines), context_lines=int(context_lines), alpha=float(alpha),
                  rule=rule, temperature=float(temperature), primetext=primetext or "", seed=int(seed),
                  device=self.device)
        turns = int(turns)
        if mode == "alternate":
            for k in range(1, turns):
                yield {"song": collab(a, b, turns=k, **kw), "done": False}
        song = collab(a, b, turns=turns, **kw)
        yield {"song": song, "done": False}
        yield {"song": song, "done": True, "memorization": self._memorization(song, a, b),
               "attribution": self._attribution(song)}

    def _memorization(self, song: dict, a: str, b: str) -> dict:
        from .memorization import check_texts, training_corpus

        try:
            corpora = self.corpus or [training_corpus(p) for p in ([self.model] if self.model else [a, b])]
        except LyricdistError as e:
            return {"error": f"memorisation check not run: {e} (start the app with --corpus DIR)"}
        generated = "".join(s["text"] for s in song["segments"] if s["author"] != "primetext")
        return {"rows": check_texts([generated], corpora)[0]}

    def _attribution(self, song: dict) -> dict | None:
        if self.similarity is None:
            return None
        from .similarity.score import score_collab

        model, vocab, refs = self.similarity
        return score_collab(model, vocab, refs, song)


# ---- rendering -------------------------------------------------------------------------------------------------
PALETTE = ("#e4572e", "#17bebb", "#76b041", "#ffc914", "#2e282a")


def song_html(song: dict) -> str:
    """The song as HTML: one block per part, headed by its author's name, each author in their own colour."""
    import html

    colours: dict[str, str] = {}
    blocks = []
    for s in song["segments"]:
        colour = colours.setdefault(s["author"], "#999" if s["author"] == "primetext" else
                                    PALETTE[len([a for a in colours if a != "primetext"]) % len(PALETTE)])
        blocks.append(f'<div class="part" style="border-left:4px solid {colour};padding:2px 10px;margin:8px 0">'
                      f'<div class="author" style="font-weight:600;color:{colour}">{html.escape(s["author"])}</div>'
                      f'<pre style="white-space:pre-wrap;margin:0;font-family:inherit">{html.escape(s["text"])}</pre>'
                      f'</div>')
    return "".join(blocks)


def memorization_markdown(report: dict) -> str:
    from .memorization import NGRAM

    if "error" in report:
        return f"**{report['error']}**"
    rows = report["rows"]
    flagged = [r for r in rows if r["warn"]]
    head = ("**Warning: possible memorisation** of " + ", ".join(r["artist"] for r in flagged)
            if flagged else "No memorisation warning")
    body = "\n".join(f"| {r['artist']} | {r['longest_span']} | {r['ngram_share']:.1%} | {'yes' if r['warn'] else ''} |"
                     for r in rows)
    return (f"{head}\n\n| artist | longest copied span (chars) | {NGRAM}-grams from training text | flagged |\n"
            f"|---|---|---|---|\n{body}")


def attribution_markdown(result: dict | None) -> str:
    if result is None:
        return "_No similarity model: start the app with `--similarity RUN` to see each part's style._"
    authors = [a for a in result["authors"] if a not in result.get("unknown_authors", [])]
    lines = ["| part | written by | " + " | ".join(f"like {a}" for a in authors) + " | closer to |",
             "|---" * (len(authors) + 3) + "|"]
    for k, r in enumerate(result["segments"], 1):
        sims = " | ".join(f"{r['similarity'][a]:.3f}" for a in authors)
        lines.append(f"| {k} | {r['author']} | {sims} | {r['closer_to'] or '-'} |")
    accuracy = result["attribution_accuracy"]
    lines.append("")
    lines.append("Parts that read like their author: " + ("n/a" if accuracy is None else f"{accuracy:.0%}")
                 + f" of {result['attributed_segments']}")
    for a in result.get("unknown_authors", []):
        lines.append(f"\n_No reference songs for {a!r} in the similarity model: its parts are not attributed._")
    return "\n".join(lines)


def build(studio: Studio):
    """The Gradio Blocks page for `studio`."""
    from .fileio import atomic_write_json

    gr = _gradio()
    values = [v for _, v in studio.choices]
    out_dir = Path(tempfile.mkdtemp(prefix="lyricdist-app-"))
    kind = "artist of the conditioned model" if studio.model else "checkpoint (or another checkpoint path / hf: ref)"

    def run(a, b, mode, temperature, turns, lines, alpha, rule, seed, primetext):
        """Stream (parts, status, memorisation, attribution, JSON file) to the page; bad input is one line."""
        try:
            for step in studio.write(a, b, mode, temperature, turns, lines, alpha, rule, seed, primetext):
                song = step["song"]
                if not step["done"]:
                    n = len([s for s in song["segments"] if s["author"] != "primetext"])
                    yield song_html(song), f"Writing... {n} part(s)", "", "", None
                    continue
                path = out_dir / f"song-seed{int(seed)}-{len(os.listdir(out_dir))}.json"
                atomic_write_json(path, {**song, "memorization": step["memorization"].get("rows")})
                yield (song_html(song), f"Done: {len(song['segments'])} part(s), seed {int(seed)}.",
                       memorization_markdown(step["memorization"]), attribution_markdown(step["attribution"]),
                       str(path))
        except LyricdistError as e:
            yield "", f"**Error:** {e}", "", "", None
        except Exception as e:  # noqa: BLE001 - the page shows one line, never a traceback
            print(f"lyricdist app: {type(e).__name__}: {e}", file=sys.stderr)
            yield "", f"**Error:** {type(e).__name__}: {e}", "", "", None

    with gr.Blocks(title="lyricdist collab", analytics_enabled=False) as page:
        gr.Markdown("# lyricdist collab\nTwo artists write one song. Same seed, same song as `lyricdist collab`.")
        with gr.Row():
            a = gr.Dropdown(studio.choices, value=values[0], label="Artist A", allow_custom_value=True,
                            info=f"an {kind}")
            b = gr.Dropdown(studio.choices, value=values[1], label="Artist B", allow_custom_value=True)
            mode = gr.Radio(list(MODES), value="alternate", label="Mode",
                            info="alternate turns; blend both models' next-character odds; condition one model")
        with gr.Row():
            temperature = gr.Slider(0.05, 2.0, value=0.8, step=0.05, label="Temperature")
            turns = gr.Slider(1, 16, value=4, step=1, label="Turns")
            lines = gr.Slider(1, 16, value=4, step=1, label="Lines per turn")
            alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Alpha (weight of B: blend, condition)")
            rule = gr.Radio(["product", "mixture"], value="product", label="Blend rule")
            seed = gr.Number(value=0, precision=0, label="Seed")
        primetext = gr.Textbox(label="Opening text (optional)", lines=1)
        go = gr.Button("Write the song", variant="primary", elem_id="write")
        status = gr.Markdown(elem_id="status")
        parts = gr.HTML(label="Song (each part labelled by its author)", elem_id="song")
        with gr.Row():
            memo = gr.Markdown(elem_id="memorization")
            attribution = gr.Markdown(elem_id="attribution")
        download = gr.File(label="Song JSON (as `lyricdist collab --out` writes it)", elem_id="download")
        go.click(run, [a, b, mode, temperature, turns, lines, alpha, rule, seed, primetext],
                 [parts, status, memo, attribution, download], api_name="write")
    return page


def _theme(gr):
    """Gradio's default look with system fonts: no web fonts to fetch, so the page works offline."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def app(checkpoints: list[str], similarity: str | None = None, corpus: list[str] | None = None,
        host: str = "127.0.0.1", port: int | None = None, device: str = "cpu") -> None:
    """Serve the collaboration page until interrupted.

    Args:
        checkpoints: two checkpoints, or one artist-conditioned checkpoint (local, hf:REPO, wandb:ENTITY/PROJECT/NAME)
        similarity: a `lyricdist similarity train` run: show each part's style attribution
        corpus: prepared corpora for the memorisation check (default: the ones the checkpoints record)
        host: address to listen on (127.0.0.1: this machine only)
        port: port (default: 7860, or the next free one)
        device: cpu, cuda, ...
    """
    gr = _gradio()
    studio = Studio.open(checkpoints, similarity=similarity, corpus=corpus, device=device)
    page = build(studio)
    _, local_url, _ = page.queue().launch(server_name=host, server_port=port, prevent_thread_lock=True,
                                          ssr_mode=False, quiet=True, show_error=False,
                                          theme=_theme(gr), footer_links=["api"])
    print(f"lyricdist app: serving {', '.join(checkpoints)} on {local_url} (Ctrl+C to stop)", flush=True)
    try:
        page.block_thread()
    finally:
        gr.close_all()


def cli_parser():
    from .cli import function_parser

    return function_parser(app, positional="checkpoints")


def cli_run(parser, args) -> int:
    from .cli import call

    call(app, args)
    return 0
