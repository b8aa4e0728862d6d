"""`lyricdist app`: the collaboration page served on 127.0.0.1, driven through gradio_client and a real headless
Chromium (Debian's, at /usr/bin/chromium, driven by playwright); the song matches `lyricdist collab`'s."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
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


def _cli_song(tmp_path, *args) -> dict:
    out = tmp_path / f"cli-{len(list(tmp_path.glob('cli-*')))}.json"
    run_cli("collab", *args, "--out", str(out))
    return json.loads(out.read_text())


def _labels(song_html: str) -> list[str]:
    """The author heading of each part of the page's song."""
    return [html.unescape(a) for a in re.findall(r'<div class="author"[^>]*>(.*?)</div>', song_html or "")]


def _texts(song_html: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r"<pre[^>]*>(.*?)</pre>", song_html or "", re.S)]


# ---- without a server ------------------------------------------------------------------------------------------
def test_streamed_parts_are_prefixes_of_the_final_song(models):
    """The page streams turn k as collab(turns=k): that is only right if each is a prefix of the whole song."""
    from lyricdist.app import Studio

    steps = list(Studio.open([models["alpha"], models["beta"]]).write(models["alpha"], models["beta"], seed=4,
                                                                      turns=4, lines=2))
    final = steps[-1]["song"]["segments"]
    assert [len(s["song"]["segments"]) for s in steps] == [1, 2, 3, 4, 4]
    for step in steps:
        assert step["song"]["segments"] == final[: len(step["song"]["segments"])]
    assert steps[-1]["memorization"]["rows"] and steps[-1]["attribution"] is None


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
def test_conditioned_app_streams_the_clis_song_with_attribution(models, tmp_path):
    settings = dict(mode="alternate", temperature=0.7, turns=3, lines=2, alpha=0.5, rule="product", seed=7,
                    primetext="")
    with served(models["cond"], "--similarity", models["sim"]) as url:
        client = _client(url)
        job = client.submit(*ARTISTS, *settings.values(), api_name="/write")
        outputs = job.outputs() if job.result() is not None else []
        parts, status, memo, attribution, download = outputs[-1]
        assert status.startswith("Done: 3 part(s)")
        assert _labels(parts) == [ARTISTS[0], ARTISTS[1], ARTISTS[0]]
        streamed = [len(_labels(o[0])) for o in outputs if o[1].startswith("Writing")]
        assert streamed[:2] == [1, 2], streamed  # the parts arrive one by one
        song = json.loads(Path(download).read_text())
        cli = _cli_song(tmp_path, *ARTISTS, "--model", models["cond"], "--mode", "alternate", "--temperature", "0.7",
                        "--turns", "3", "--lines", "2", "--seed", "7")
        assert {k: v for k, v in song.items() if k != "memorization"} == cli
        assert _texts(parts) == [s["text"] for s in cli["segments"]]
        assert "memorisation" in memo.lower() and f"| {ARTISTS[0]} |" in memo
        assert f"like {ARTISTS[0]}" in attribution and f"like {ARTISTS[1]}" in attribution

        condition = client.predict(*ARTISTS, "condition", 0.7, 2, 2, 0.3, "product", 1, "", api_name="/write")
        assert condition[1].startswith("Done: 1 part(s)") and _labels(condition[0]) == [" + ".join(ARTISTS)]

        parts, status, *_ = client.predict("Nobody", ARTISTS[1], *settings.values(), api_name="/write")
        assert status.startswith("**Error:** artist 'Nobody' is not in") and "Traceback" not in status
        assert not _labels(parts)


@pytest.mark.slow
def test_two_checkpoint_app_blends_like_the_cli_and_reports_bad_input(models, tmp_path):
    with served(models["alpha"], models["beta"]) as url:
        client = _client(url)
        parts, status, memo, attribution, download = client.predict(
            models["alpha"], models["beta"], "blend", 0.9, 2, 3, 0.25, "mixture", 11, "la la", api_name="/write")
        assert status.startswith("Done: 2 part(s)"), status
        assert _labels(parts) == ["primetext", "alpha + beta"]
        cli = _cli_song(tmp_path, models["alpha"], models["beta"], "--mode", "blend", "--temperature", "0.9", "--turns",
                        "2", "--lines", "3", "--alpha", "0.25", "--rule", "mixture", "--seed", "11", "--primetext",
                        "la la")
        assert {k: v for k, v in json.loads(Path(download).read_text()).items() if k != "memorization"} == cli
        assert "--similarity RUN" in attribution

        missing = str(tmp_path / "no-such-checkpoint")
        _, status, *_ = client.predict(models["alpha"], missing, "alternate", 0.8, 2, 2, 0.5, "product", 0, "",
                                       api_name="/write")
        assert status.startswith("**Error:** checkpoint") and "not found" in status and "Traceback" not in status
        _, status, *_ = client.predict(models["alpha"], models["beta"], "condition", 0.8, 2, 2, 0.5, "product", 0, "",
                                       api_name="/write")
        assert status.startswith("**Error:**") and "artist-conditioned" in status


# ---- served, in a real browser ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_browser_writes_a_song_with_labelled_parts(models, tmp_path):
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
            page.get_by_label("Seed").fill("3")
            page.get_by_role("button", name="Write the song").click()
            page.locator("#status").get_by_text("Done:").wait_for(timeout=120_000)
            authors = page.locator("#song .author").all_inner_texts()
            assert authors == [ARTISTS[0], ARTISTS[1], ARTISTS[0], ARTISTS[1]], authors  # 4 turns, alternating
            texts = page.locator("#song .part pre").all_inner_texts()
            assert len(texts) == 4 and all(t.strip() for t in texts), texts
            assert "like DJ Kilowatt" in page.locator("#attribution").inner_text()
            assert "Traceback" not in page.content()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")
