"""app: a local web app (Gradio) for two-artist collaborations -- `lyricdist collab` with controls.

    lyricdist app CKPT_A CKPT_B            # two checkpoints (e.g. two per-artist fine-tunes)
    lyricdist app CONDITIONED_CKPT         # two artists of one artist-conditioned model
    lyricdist app ... --similarity RUN     # also show each part's style attribution (a `similarity train` run)
    lyricdist app ... --host 0.0.0.0       # serve other machines too (default $GRADIO_SERVER_NAME, else 127.0.0.1)
    lyricdist app ... --share true              # and a temporary public link through Gradio's share service

The page writes the song with lyricdist.collab's `collab_stream`, the generator `collab()` itself is built on:
the text appears as it is generated (line by line, each part headed by its author), each song is written once,
and the same seed gives the same song as the CLI (the downloadable JSON is what `lyricdist collab --out` writes).
Stop ends a song where it is; the part written so far is kept, checked and downloadable (marked "stopped").
Guidance w steers each author away from the other (alternate mode; see lyricdist.collab). Below the song: the
memorisation report the CLI prints (word 5-grams and copied word spans against each artist's training songs, next
to its real held-out songs; characters for comparison) and, with --similarity, each part's attribution.
Checkpoints take every reference `sample` takes (local, hf:, wandb:); models and corpus indexes are loaded once
per server. A bad input (an unknown artist, a missing checkpoint) is shown as one line in the page. SIGTERM (as
`docker stop` sends it, through tini or `docker run --init`, or to the app as PID 1) and ^C stop the server.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from jsonargparse.typing import NonNegativeFloat

from .collab import MODES
from .errors import LyricdistError
from .generate import DEFAULT_GUIDANCE
from .options import listed

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
    """What the page offers, checked once at start (every checkpoint loads; one alone must be conditioned). Songs
    are collab_stream's; the models of each pair of artists and the memorisation indexes of each corpus are
    loaded once and kept (a few pairs at a time)."""

    checkpoints: list[str]
    model: str | None = None  # one artist-conditioned checkpoint: A and B name two of its artists
    choices: list[tuple[str, str]] = field(default_factory=list)  # (shown, value) for the A and B pickers
    corpus: list[str] | None = None
    similarity: tuple | None = None  # (model, vocab, References)
    device: str = "cpu"
    _authors: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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

    def authors(self, a: str, b: str):
        """The two authors (collab.load_authors), loaded once per pair; the last few pairs are kept."""
        from .collab import load_authors

        key = (a, b, self.model)
        with self._lock:
            if key in self._authors:
                self._authors.move_to_end(key)
                return self._authors[key]
        pair = load_authors(a, b, self.model, self.device)
        with self._lock:
            self._authors[key] = pair
            while len(self._authors) > 4:
                self._authors.popitem(last=False)
        return pair

    # ---- one song --------------------------------------------------------------------------------------------
    def write(self, a: str, b: str, mode: str = "alternate", temperature: float = 0.8, turns: int = 4,
              lines: int = 4, alpha: float = 0.5, rule: str = "product", seed: int = 0, primetext: str = "",
              context_lines: int = 2, guidance: float = DEFAULT_GUIDANCE, stop: Callable[[], bool] | None = None,
              every: float = 0.25) -> Iterator[dict]:
        """Yield the song as it is written ({"song": a copy of collab_stream's dict, "done": False}) once set up,
        at every new part and line, and at least every `every` seconds while text comes; then, at the end or as
        soon as `stop()` says so, {"song", "done": True, "stopped", "memorization", "attribution"}. Raises
        LyricdistError for bad input."""
        from .collab import collab_stream

        if not a or not b:
            raise LyricdistError("pick two artists (A and B)")
        stream = collab_stream(a, b, mode=mode, model=self.model, turns=int(turns), lines=int(lines),
                               context_lines=int(context_lines), alpha=float(alpha), rule=rule,
                               temperature=float(temperature), primetext=primetext or "", seed=int(seed),
                               device=self.device, guidance=float(guidance), authors=self.authors(a, b))
        song, stopped, parts, shown = None, False, -1, 0.0
        for song in stream:  # one step a character
            if stop is not None and stop():
                stopped = True
                break
            segments, now = song["segments"], time.monotonic()
            if len(segments) != parts or (segments and segments[-1]["text"].endswith("\n")) or now - shown >= every:
                parts, shown = len(segments), now
                yield {"song": _copy(song), "done": False}
        stream.close()
        song = _copy(song) if song is not None else {"segments": [], "authors": [a, b], "mode": mode}
        if stopped:
            song["stopped"] = True
        yield {"song": song, "done": True, "stopped": stopped, "memorization": self._memorization(song, a, b),
               "attribution": self._attribution(song)}

    def _memorization(self, song: dict, a: str, b: str) -> dict:
        """The CLI's check of the generated song (lyricdist.memorization.song_memorization, on indexes kept per
        corpus): the whole text against every artist, and each part against its author's training songs."""
        from .memorization import song_memorization, training_corpus

        try:
            corpora = self.corpus or [training_corpus(p) for p in ([self.model] if self.model else [a, b])]
        except LyricdistError as e:
            return {"error": f"memorisation check not run: {e} (start the app with --corpus DIR)"}
        return song_memorization(song["segments"], corpora, quiet=True)

    def _attribution(self, song: dict) -> dict | None:
        if self.similarity is None or not any(s["text"].strip() for s in song["segments"]):
            return None
        from .similarity.score import score_collab

        model, vocab, refs = self.similarity
        return score_collab(model, vocab, refs, song)


def _copy(song: dict) -> dict:
    """A snapshot of collab_stream's song (which it goes on changing in place)."""
    return {**song, "segments": [dict(s) for s in song["segments"]]}


# ---- rendering -------------------------------------------------------------------------------------------------
PALETTE = ("#e4572e", "#17bebb", "#76b041", "#ffc914", "#2e282a")


def song_html(song: dict, memorization: dict | None = None) -> str:
    """The song as HTML: one block per part, headed by its author's name, each author in their own colour; a part
    that copies a word span longer than its author's real held-out songs' 90th percentile says so under its name."""
    import html

    from .memorization import flagged_segments, span_notice

    flagged = flagged_segments(memorization)
    colours: dict[str, str] = {}
    blocks = []
    for k, s in enumerate(song["segments"]):
        colour = colours.setdefault(s["author"], "#999" if s["author"] == "primetext" else
                                    PALETTE[len([a for a in colours if a != "primetext"]) % len(PALETTE)])
        blocks.append(f'<div class="part" style="border-left:4px solid {colour};padding:2px 10px;margin:8px 0">'
                      f'<div class="author" style="font-weight:600;color:{colour}">{html.escape(s["author"])}</div>'
                      + (f'<div class="copied" style="color:#b00">{html.escape(span_notice(flagged[k]))}</div>'
                         if k in flagged else "") +
                      f'<pre style="white-space:pre-wrap;margin:0;font-family:inherit">{html.escape(s["text"])}</pre>'
                      f'</div>')
    return "".join(blocks)


def memorization_markdown(report: dict) -> str:
    """The CLI's memorisation report as a table: per artist, the share of the text's word 5-grams found in its
    training songs and the longest copied run of words, next to the same figures for its real held-out songs (what
    decides the warning), then the character figures for comparison."""
    from .memorization import NGRAM, WORD_NGRAM, flagged_segments, span_notice

    if "error" in report:
        return f"**{report['error']}**"
    rows = report["rows"]
    flagged = [r for r in rows if r["warn"]]
    head = ("**Warning: possible memorisation** of " + ", ".join(r["artist"] for r in flagged)
            if flagged else "**No memorisation warning**: the song copies no more than real unseen songs do")
    spans = [f"- part {k + 1} ({_md(r['author'])}) {_md(span_notice(r))}" for k, r in flagged_segments(report).items()]
    if spans:
        head += "\n\n**Copied spans past the real held-out songs' 90th percentile:**\n" + "\n".join(spans)
    body = []
    for r in rows:
        words = f" ({_md(r['longest_words'])})" if r.get("longest_words") else ""
        heldout = (f"{r['heldout_word_ngram_share']:.1%}, {r['heldout_longest_word_span_p90']:g} words "
                   f"({r['heldout_songs']} songs)" if r["heldout_songs"] else "no held-out songs")
        body.append(f"| {_md(r['artist'])} | {r['word_ngram_share']:.1%} | {r['longest_word_span']}{words} | {heldout} "
                    f"| {r['longest_span']} | {r['ngram_share']:.1%} | {'yes' if r['warn'] else ''} |")
    return (f"{head}\n\nMemorisation (word {WORD_NGRAM}-grams and copied word spans in each artist's training songs, "
            f"against its real held-out songs; characters for comparison):\n\n"
            f"| artist | word {WORD_NGRAM}-grams from training | longest copied words | real held-out songs: "
            f"{WORD_NGRAM}-grams, p90 span | longest copied chars | char {NGRAM}-grams | flagged |\n"
            f"|---|---|---|---|---|---|---|\n" + "\n".join(body))


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    import html

    return html.escape(" ".join(str(text).split())).replace("|", "&#124;")


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


def status_line(song: dict, seed, done: bool = False, stopped: bool = False) -> str:
    """What the page says under the buttons: how far the song is."""
    parts = len(song["segments"])
    chars = sum(len(s["text"]) for s in song["segments"] if s["author"] != "primetext")
    if stopped:
        return f"Stopped: {parts} part(s), {chars} characters written, seed {int(seed)}."
    if done:
        return f"Done: {parts} part(s), seed {int(seed)}."
    return f"Writing... {parts} part(s), {chars} characters"


def build(studio: Studio, guidance: float = DEFAULT_GUIDANCE):
    """The Gradio Blocks page for `studio` (`guidance`: the guidance slider's starting value)."""
    from .fileio import atomic_write_json

    gr = _gradio()
    values = [v for _, v in studio.choices]
    out_dir = Path(tempfile.mkdtemp(prefix="lyricdist-app-"))
    kind = "artist of the conditioned model" if studio.model else "checkpoint (or another checkpoint path / hf: ref)"
    stopping: set[str] = set()  # sessions whose Stop was pressed (a running song checks at every character)
    lock = threading.Lock()

    def run(a, b, mode, temperature, turns, lines, alpha, rule, seed, primetext, guidance, request: gr.Request):
        """Stream (parts, status, memorisation, attribution, JSON file) to the page; bad input is one line."""
        session = request.session_hash if request is not None else None
        with lock:
            stopping.discard(session)  # a Stop pressed before this song does not stop it

        def stop() -> bool:
            with lock:
                return session in stopping

        try:
            for step in studio.write(a, b, mode, temperature, turns, lines, alpha, rule, seed, primetext,
                                     guidance=guidance, stop=stop):
                song = step["song"]
                if not step["done"]:
                    yield song_html(song), status_line(song, seed), "", "", None
                    continue
                path = out_dir / f"song-seed{int(seed)}-{len(os.listdir(out_dir))}.json"
                atomic_write_json(path, {**song, "memorization": step["memorization"]})  # as collab --out writes it
                yield (song_html(song, step["memorization"]), status_line(song, seed, done=True, stopped=step["stopped"]),
                       memorization_markdown(step["memorization"]), attribution_markdown(step["attribution"]),
                       str(path))
        except LyricdistError as e:
            yield "", f"**Error:** {e}", "", "", None
        except Exception as e:  # noqa: BLE001 - the page shows one line, never a traceback
            print(f"lyricdist app: {type(e).__name__}: {e}", file=sys.stderr)
            yield "", f"**Error:** {type(e).__name__}: {e}", "", "", None
        finally:
            with lock:
                stopping.discard(session)

    def stop_song(request: gr.Request):
        """Stop this session's song where it is (its end-of-song report still comes)."""
        with lock:
            stopping.add(request.session_hash)

    for handler in (run, stop_song):  # Gradio passes the request to a parameter annotated gr.Request, which it
        handler.__annotations__["request"] = gr.Request  # resolves in module globals: give it the class itself

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
            turns = gr.Slider(1, 16, value=4, step=1, label="Turns", elem_id="turns")
            lines = gr.Slider(1, 16, value=4, step=1, label="Lines per turn", elem_id="lines")
            alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Alpha (weight of B: blend, condition)")
            rule = gr.Radio(["product", "mixture"], value="product", label="Blend rule")
            seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
        with gr.Row():
            primetext = gr.Textbox(label="Opening text (optional)", lines=1)
            guide = gr.Slider(0.0, 8.0, value=guidance, step=0.25, label="Guidance w (alternate)", elem_id="guidance",
                              info="steer each author away from the other: lA + w (lA - lB); 0 = off (the measured "
                                   "default); higher w: parts more like their author, fewer real words, more copying")
        with gr.Row():
            go = gr.Button("Write the song", variant="primary", elem_id="write")
            halt = gr.Button("Stop", variant="stop", elem_id="stop")
        status = gr.Markdown(elem_id="status")
        parts = gr.HTML(label="Song (each part labelled by its author)", elem_id="song")
        memo = gr.Markdown(elem_id="memorization")
        attribution = gr.Markdown(elem_id="attribution")
        download = gr.File(label="Song JSON (as `lyricdist collab --out` writes it)", elem_id="download")
        go.click(run, [a, b, mode, temperature, turns, lines, alpha, rule, seed, primetext, guide],
                 [parts, status, memo, attribution, download], api_name="write")
        halt.click(stop_song, None, None, api_name="stop", concurrency_limit=None)  # beside a running song
    return page


def _theme(gr):
    """Gradio's default look with system fonts: no web fonts to fetch, so the page works offline."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def app(checkpoints: list[str], similarity: str | None = None, corpus: str | list[str] | None = None,
        host: str | None = None, port: int | None = None, share: bool = False, guidance: NonNegativeFloat = DEFAULT_GUIDANCE,
        device: str = "cpu") -> None:
    """Serve the collaboration page until interrupted (^C, or SIGTERM as `docker stop` sends it).

    Args:
        checkpoints: two checkpoints, or one artist-conditioned checkpoint (local, hf:REPO, wandb:ENTITY/PROJECT/NAME)
        similarity: a `lyricdist similarity train` run: show each part's style attribution
        corpus: prepared corpora for the memorisation check (default: the ones the checkpoints record)
        host: address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1, this machine only; 0.0.0.0 serves
            other machines, e.g. from a container)
        port: port (default: $GRADIO_SERVER_PORT, else 7860 or the next free one)
        share: also serve a temporary public https://*.gradio.live link (through Gradio's share service)
        guidance: the page's starting guidance w (default: lyricdist.generate.DEFAULT_GUIDANCE, chosen by
            scripts/bench/collab_quality.py)
        device: cpu, cuda, ...
    """
    gr = _gradio()
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    studio = Studio.open(checkpoints, similarity=similarity, corpus=listed(corpus), device=device)
    page = build(studio, guidance=guidance)
    received: list[int] = []
    stopped = threading.Event()

    def on_signal(signum, frame) -> None:  # PID 1 in a container gets no default SIGTERM action: handle it
        received.append(signum)
        stopped.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _, local_url, share_url = page.queue().launch(server_name=host, server_port=port, share=share,
                                                      prevent_thread_lock=True, ssr_mode=False, quiet=True,
                                                      show_error=False, theme=_theme(gr), footer_links=["api"])
        where = local_url + (f" and {share_url}" if share_url else "")
        print(f"lyricdist app: serving {', '.join(checkpoints)} on {where} (Ctrl+C to stop)", flush=True)
        while not stopped.wait(0.2) and page.is_running:
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        page.close()
    why = signal.Signals(received[0]).name if received else "server closed"
    print(f"lyricdist app: stopped ({why})", flush=True)


def cli_parser():
    from .options import function_parser

    return function_parser(app, words="checkpoints")


def cli_run(parser, args) -> int:
    from .options import call

    call(app, args)
    return 0
