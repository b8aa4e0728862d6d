"""`lyricdist app`: the collaboration page served on 127.0.0.1, driven through gradio_client and a real headless
Chromium (Debian's, at /usr/bin/chromium, driven by playwright); the song matches `lyricdist collab`'s, streams
as it is written, stops on Stop, takes guidance, and the server stops on SIGTERM.

The browser test saves a screenshot after a streamed song and prints its path (`pytest -s` shows it); with
LYRICDIST_APP_SCREENSHOT=PATH it also copies it there."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import CONFIGS, run_cli, tiny_config
from lyricdist.train import train

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTISTS = ("DJ Kilowatt", "Juniper Vale")


@pytest.fixture(scope="module")
def models(demo_corpus, tmp_path_factory) -> dict:
    """An artist-conditioned model of the demo corpus's two artists, two plain ones, a similarity run."""
    root = tmp_path_factory.mktemp("app")
    base = ["--train.max_steps=20", "--samples.enabled=false"]
    train(tiny_config(demo_corpus, root / "cond", "--model.artist_embedding_dim=4", *base))
    train(tiny_config(demo_corpus, root / "alpha", "--train.seed=1", *base))
    train(tiny_config(demo_corpus, root / "beta", "--train.seed=2", "--train.lr=0.02", *base))
    run_cli("similarity", "train", "--config", str(CONFIGS / "similarity-tiny.yaml"), f"--train.out_dir={root / 'sim'}",
            "--train.epochs=2")
    return {name: str(root / name) for name in ("cond", "alpha", "beta", "sim")}


@contextmanager
def served(*args: str):
    """`lyricdist app ARGS` in a subprocess on 127.0.0.1; yields its URL; stopped (by its pid) afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "lyricdist", "app", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("lyricdist app: serving"):
                yield line.split(" on ")[-1].split()[0].rstrip("/")
                break
        else:
            raise AssertionError(f"the app did not start ({proc.wait()}):\n{''.join(lines)}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def _cli_song(tmp_path, *args, memorization: bool = False) -> dict:
    """The CLI's song, without its memorisation figures unless asked (guided songs carry them)."""
    out = tmp_path / f"cli-{len(list(tmp_path.glob('cli-*')))}.json"
    run_cli("collab", *args, "--out", str(out))
    return {k: v for k, v in json.loads(out.read_text()).items() if k != "memorization" or memorization}


def _labels(song_html: str) -> list[str]:
    """The author heading of each part of the page's song."""
    return [html.unescape(a) for a in re.findall(r'<div class="author"[^>]*>(.*?)</div>', song_html or "")]


def _texts(song_html: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r"<pre[^>]*>(.*?)</pre>", song_html or "", re.S)]


# ---- without a server ------------------------------------------------------------------------------------------
def _prefix_of(partial: dict, full: dict) -> bool:
    """Whether `partial`'s parts are `full`'s first parts, its last one possibly cut short."""
    a, b = partial["segments"], full["segments"]
    if not a:
        return True
    if len(a) > len(b) or a[:-1] != b[: len(a) - 1]:
        return False
    return a[-1]["author"] == b[len(a) - 1]["author"] and b[len(a) - 1]["text"].startswith(a[-1]["text"])


def test_collab_is_its_stream_run_to_the_end(models):
    """collab() is collab_stream's last song; the stream grows one character a step, each step a prefix of the end."""
    from lyricdist.collab import collab, collab_stream

    kw = dict(turns=3, lines=2, seed=4, primetext="la la\n")
    sizes, last = [], None
    for song in collab_stream(models["alpha"], models["beta"], **kw):
        sizes.append(sum(len(s["text"]) for s in song["segments"]))
        last = {**song, "segments": [dict(s) for s in song["segments"]]}
    assert last == collab(models["alpha"], models["beta"], **kw)
    assert sizes[0] == len("la la\n") and sizes == list(range(sizes[0], sizes[0] + len(sizes)))  # one char a step
    guided = dict(model=models["cond"], turns=2, lines=2, seed=1, guidance=2.0)
    assert list(collab_stream(*ARTISTS, **guided))[-1] == collab(*ARTISTS, **guided)


def test_the_page_streams_lines_of_the_clis_song_and_stops_on_request(models):
    """Studio.write (what the page shows): line by line, every snapshot a prefix of collab()'s song, the last one it;
    a stop ends the song where it is, still checked for memorisation."""
    from lyricdist.app import Studio
    from lyricdist.collab import collab

    studio = Studio.open([models["alpha"], models["beta"]])
    steps = list(studio.write(models["alpha"], models["beta"], seed=4, turns=4, lines=2))
    final = steps[-1]["song"]
    assert steps[-1]["done"] and not steps[-1]["stopped"]
    assert {k: v for k, v in final.items()} == collab(models["alpha"], models["beta"], seed=4, turns=4, lines=2)
    streamed = [s["song"] for s in steps[:-1]]
    assert len(streamed) > 4 + 2  # more than once a part: at every line
    assert all(_prefix_of(s, final) for s in streamed)
    assert [len(s["segments"]) for s in streamed] == sorted(len(s["segments"]) for s in streamed)
    assert steps[-1]["memorization"]["rows"] and steps[-1]["attribution"] is None

    asked = []
    stopped = list(studio.write(models["alpha"], models["beta"], seed=4, turns=4, lines=2,
                                stop=lambda: asked.append(1) or len(asked) > 30))
    end = stopped[-1]
    assert end["done"] and end["stopped"] and end["song"]["stopped"] is True
    written = sum(len(s["text"]) for s in end["song"]["segments"])
    assert written == 30 and _prefix_of(end["song"], final)  # stopped at step 31: the set-up and 30 characters
    assert end["memorization"]["rows"]


def test_memorisation_markdown_is_the_clis_word_level_report(models):
    from lyricdist.app import Studio, memorization_markdown
    from lyricdist.memorization import check_texts

    studio = Studio.open([models["cond"]])
    *_, end = studio.write(*ARTISTS, seed=2, turns=2, lines=2)
    generated = "".join(s["text"] for s in end["song"]["segments"])
    rows = end["memorization"]["rows"]
    assert rows == check_texts([generated], [json.loads((Path(models["cond"]) / "checkpoints" / "best" /
                                                          "config.json").read_text())["corpus"]])[0]
    table = memorization_markdown(end["memorization"])
    assert "word 5-grams from training" in table and "real held-out songs" in table
    for r in rows:  # every artist's word figures, its held-out reference and its character figures
        assert (f"| {r['artist']} | {r['word_ngram_share']:.1%} | {r['longest_word_span']}" in table
                and f"{r['heldout_word_ngram_share']:.1%}" in table and f"| {r['ngram_share']:.1%} |" in table)


@pytest.mark.slow
def test_missing_checkpoint_or_unconditioned_single_model_is_one_line(models, tmp_path):
    proc = run_cli("app", str(tmp_path / "absent"), str(tmp_path / "absent2"), check=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "not found" in proc.stderr, proc.stderr
    proc = run_cli("app", models["alpha"], check=False)
    assert proc.returncode == 1 and "not artist-conditioned" in proc.stderr, proc.stderr


def test_without_gradio_the_command_names_the_extra(models, tmp_path):
    """Gradio made unimportable (a stub package first on the path raises as a missing module does)."""
    stub = tmp_path / "stub" / "gradio"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'gradio'\", name='gradio')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(stub.parent), os.environ.get("PYTHONPATH", "")])}
    proc = run_cli("app", models["cond"], env=env, check=False)
    assert proc.returncode == 1 and "pip install 'lyricdist[app]'" in proc.stderr, proc.stderr


# ---- served, through gradio_client -----------------------------------------------------------------------------
@pytest.mark.slow
def test_conditioned_app_streams_the_clis_song_with_guidance_attribution_and_stop(models, tmp_path):
    settings = dict(mode="alternate", temperature=0.7, turns=3, lines=2, alpha=0.5, rule="product", seed=7,
                    primetext="", guidance=2.0)
    with served(models["cond"], "--similarity", models["sim"]) as url:
        client = _client(url)
        job = client.submit(*ARTISTS, *settings.values(), api_name="/write")
        outputs = job.outputs() if job.result() is not None else []
        parts, status, memo, attribution, download = outputs[-1]
        assert status.startswith("Done: 3 part(s)")
        assert _labels(parts) == [ARTISTS[0], ARTISTS[1], ARTISTS[0]]
        song = json.loads(Path(download).read_text())
        cli = _cli_song(tmp_path, *ARTISTS, "--model", models["cond"], "--mode", "alternate", "--temperature", "0.7",
                        "--turns", "3", "--lines", "2", "--seed", "7", "--guidance", "2", memorization=True)
        assert song["memorization"] == cli.pop("memorization")  # guided: the CLI's figures, per part too
        assert {k: v for k, v in song.items() if k != "memorization"} == cli  # guidance w=2, as the CLI's
        assert _texts(parts) == [s["text"] for s in cli["segments"]]
        # streamed: line by line, each a prefix of the song, the texts growing
        streamed = [o for o in outputs if o[1].startswith("Writing")]
        assert len(streamed) > 3, [o[1] for o in outputs]
        sizes = [sum(map(len, _texts(o[0]))) for o in streamed]
        assert sizes == sorted(sizes) and len(set(sizes)) > 3
        full = "".join(s["text"] for s in cli["segments"])
        assert all(full.startswith("".join(_texts(o[0]))) for o in streamed)
        assert "word 5-grams from training" in memo and f"| {ARTISTS[0]} |" in memo
        assert f"like {ARTISTS[0]}" in attribution and f"like {ARTISTS[1]}" in attribution

        condition = client.predict(*ARTISTS, "condition", 0.7, 2, 2, 0.3, "product", 1, "", 0, api_name="/write")
        assert condition[1].startswith("Done: 1 part(s)") and _labels(condition[0]) == [" + ".join(ARTISTS)]

        parts, status, *_ = client.predict("Nobody", ARTISTS[1], *settings.values(), api_name="/write")
        assert status.startswith("**Error:** artist 'Nobody' is not in") and "Traceback" not in status
        assert not _labels(parts)

        # Stop: a long song (16 turns of 16 lines, guided: two model steps a character) ends where it is
        long = {**settings, "turns": 16, "lines": 16}
        job = client.submit(*ARTISTS, *long.values(), api_name="/write")
        while not job.outputs() and not job.done():
            time.sleep(0.05)
        client.predict(api_name="/stop")
        parts, status, memo, _, download = job.result()
        assert status.startswith("Stopped:"), status
        stopped = json.loads(Path(download).read_text())
        assert stopped["stopped"] is True and stopped["memorization"] and "word 5-grams" in memo
        written = sum(len(s["text"]) for s in stopped["segments"])
        assert 0 < written < 16 * 16 * 10  # well short of a 256-line song
        # what was written is the start of the same song (the stream, run as far, in this process)
        from lyricdist.collab import collab_stream

        kw = {k: v for k, v in long.items() if k != "primetext"}
        for local in collab_stream(*ARTISTS, model=models["cond"], **kw):
            if sum(len(s["text"]) for s in local["segments"]) == written:
                break
        assert [dict(s) for s in local["segments"]] == stopped["segments"]


@pytest.mark.slow
def test_two_checkpoint_app_blends_like_the_cli_and_reports_bad_input(models, tmp_path):
    with served(models["alpha"], models["beta"]) as url:
        client = _client(url)
        parts, status, memo, attribution, download = client.predict(
            models["alpha"], models["beta"], "blend", 0.9, 2, 3, 0.25, "mixture", 11, "la la", 0, api_name="/write")
        assert status.startswith("Done: 2 part(s)"), status
        assert _labels(parts) == ["primetext", "alpha + beta"]
        cli = _cli_song(tmp_path, models["alpha"], models["beta"], "--mode", "blend", "--temperature", "0.9", "--turns",
                        "2", "--lines", "3", "--alpha", "0.25", "--rule", "mixture", "--seed", "11", "--primetext",
                        "la la")
        assert {k: v for k, v in json.loads(Path(download).read_text()).items() if k != "memorization"} == cli
        assert "--similarity RUN" in attribution

        missing = str(tmp_path / "no-such-checkpoint")
        _, status, *_ = client.predict(models["alpha"], missing, "alternate", 0.8, 2, 2, 0.5, "product", 0, "", 0,
                                       api_name="/write")
        assert status.startswith("**Error:** checkpoint") and "not found" in status and "Traceback" not in status
        _, status, *_ = client.predict(models["alpha"], models["beta"], "condition", 0.8, 2, 2, 0.5, "product", 0, "",
                                       0, api_name="/write")
        assert status.startswith("**Error:**") and "artist-conditioned" in status


@pytest.mark.slow
def test_the_server_listens_where_gradio_server_name_says_and_stops_on_sigterm(models):
    """--host defaults from GRADIO_SERVER_NAME (127.0.0.2 here: served there, not on 127.0.0.1); SIGTERM, as
    `docker stop` sends it through tini or to PID 1, closes the server and exits 0."""
    import signal
    import urllib.error
    import urllib.request
    from urllib.parse import urlparse

    proc = subprocess.Popen([sys.executable, "-m", "lyricdist", "app", models["alpha"], models["beta"]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SERVER_NAME": "127.0.0.2"})
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("lyricdist app: serving"):
                break
        url = urlparse(lines[-1].split(" on ")[-1].split()[0])
        assert url.hostname == "127.0.0.2", lines
        assert urllib.request.urlopen(f"http://127.0.0.2:{url.port}/", timeout=30).status == 200
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{url.port}/", timeout=30)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "lyricdist app: stopped (SIGTERM)" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- served, in a real browser ---------------------------------------------------------------------------------
WATCH_SONG = """() => {
  window.songSizes = [];
  const seen = () => { const n = [...document.querySelectorAll('#song .part pre')]
                                    .reduce((sum, pre) => sum + pre.textContent.length, 0);
                       if (window.songSizes[window.songSizes.length - 1] !== n) window.songSizes.push(n); };
  new MutationObserver(seen).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


@pytest.mark.slow
def test_browser_streams_a_guided_song_with_labelled_parts_and_stops(models, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    shot = tmp_path / "app.png"
    with served(models["cond"], "--similarity", models["sim"]) as url, sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(  # a fresh profile directory (--user-data-dir)
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            viewport={"width": 1280, "height": 1400},
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page()
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#seed input").fill("3")
            page.locator("#guidance input[type=number]").fill("2")
            page.locator("#guidance input[type=number]").press("Enter")
            page.evaluate(WATCH_SONG)
            page.get_by_role("button", name="Write the song").click()
            page.locator("#status").get_by_text("Done:").wait_for(timeout=180_000)
            sizes = page.evaluate("window.songSizes")
            assert len([n for n in sizes if n > 0]) >= 3 and sizes == sorted(sizes), sizes  # it grew as written
            authors = page.locator("#song .author").all_inner_texts()
            assert authors == [ARTISTS[0], ARTISTS[1], ARTISTS[0], ARTISTS[1]], authors  # 4 turns, alternating
            texts = page.locator("#song .part pre").all_inner_texts()
            assert len(texts) == 4 and all(t.strip() for t in texts), texts
            cli = _cli_song(tmp_path, *ARTISTS, "--model", models["cond"], "--seed", "3", "--guidance", "2")
            assert [t.strip() for t in texts] == [s["text"].strip() for s in cli["segments"]]  # guided, as the CLI
            assert "word 5-grams from training" in page.locator("#memorization").inner_text()
            assert "like DJ Kilowatt" in page.locator("#attribution").inner_text()
            assert "Traceback" not in page.content()
            page.screenshot(path=str(shot), full_page=True)

            # Stop: a 16 x 16 song ends where it is
            for name in ("turns", "lines"):
                page.locator(f"#{name} input[type=number]").fill("16")
                page.locator(f"#{name} input[type=number]").press("Enter")
            page.get_by_role("button", name="Write the song").click()
            page.locator("#status").get_by_text("Writing").wait_for(timeout=60_000)
            page.get_by_role("button", name="Stop").click()
            page.locator("#status").get_by_text("Stopped:").wait_for(timeout=60_000)
            assert len(page.locator("#song .author").all_inner_texts()) < 16
        finally:
            browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")
    if os.environ.get("LYRICDIST_APP_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["LYRICDIST_APP_SCREENSHOT"])
        print(f"screenshot copied to {os.environ['LYRICDIST_APP_SCREENSHOT']}")
