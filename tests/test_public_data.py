"""`lyricdist prepare tinyshakespeare` / `giitaayan`: public corpora fetched into the cache from a fake server on
127.0.0.1 (LYRICDIST_DATA_URL replaces their public homes), checked, atomic, and a clear line when offline."""

from __future__ import annotations

import json
import socket
import tarfile
from pathlib import Path

import pytest

from conftest import SHARED, run_cli
from local_server import LocalServer

FIXTURES = Path(__file__).parent / "fixtures" / "giitaayan"


class FakeDataServer(LocalServer):
    """Serves `files` (path -> bytes); `truncate` holds paths whose next answer stops half-way."""

    def __init__(self, files: dict[str, bytes]):
        super().__init__()
        self.files, self.truncate = dict(files), set()

    def handle(self, h, request: dict) -> None:
        path = request["path"]
        data = self.files.get(path)
        if data is None:
            return self.send(h, 404)
        if path in self.truncate:  # headers promise the whole file; half of it arrives, then the connection closes
            self.truncate.discard(path)
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.close_connection = True
            return
        self.send(h, 200, data)


def _isb_archive(path: Path) -> bytes:
    """The fixtures packed as GitHub packs the giit repository: giit-master/docs/N.isb.txt, plus other files."""
    with tarfile.open(path, "w:gz") as tf:
        for f in sorted(FIXTURES.iterdir()):
            tf.add(f, f"giit-master/docs/{f.name}")
        readme = path.parent / "README.md"
        readme.write_text("giit\n====\n")
        tf.add(readme, "giit-master/README.md")
    return path.read_bytes()


def _env(server: FakeDataServer, tmp_path: Path) -> dict:
    return {"LYRICDIST_DATA_URL": server.url, "LYRICDIST_CACHE": str(tmp_path / "cache")}


def _visible(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_tinyshakespeare_is_downloaded_once_checked_and_prepared(tmp_path):
    real = SHARED / "tinyshakespeare" / "input.txt"
    if not real.is_file():
        pytest.skip(f"{real} is absent (../shared is not beside the checkout): no copy of the real file to serve")
    with FakeDataServer({"/tinyshakespeare/input.txt": real.read_bytes()}) as server:
        env = _env(server, tmp_path)
        proc = run_cli("prepare", "tinyshakespeare", "--out", str(tmp_path / "ts"), env=env)
        assert "sha256 86c4e6aa" in proc.stderr
        meta = json.loads((tmp_path / "ts" / "meta.json").read_text())
        assert meta["vocab_size"] == 65 and meta["artists"] == ["tinyshakespeare"]
        assert meta["sources"] == [{"source": "tinyshakespeare", "chars": 1115394}]
        cached = tmp_path / "cache" / "data" / "tinyshakespeare" / "input.txt"
        assert cached.read_bytes() == real.read_bytes()
        assert [r["path"] for r in server.requests] == ["/tinyshakespeare/input.txt"]
        assert server.requests[0]["headers"]["user-agent"].startswith("lyricdist/")
        run_cli("prepare", "tinyshakespeare", "--out", str(tmp_path / "again"), env=env)
        assert len(server.requests) == 1  # the cached copy, no second download
        assert (tmp_path / "again" / "train.bin").read_bytes() == (tmp_path / "ts" / "train.bin").read_bytes()


def test_a_file_that_is_not_tinyshakespeare_is_refused_and_not_kept(tmp_path):
    with FakeDataServer({"/tinyshakespeare/input.txt": b"First Citizen:\nnot quite\n"}) as server:
        proc = run_cli("prepare", "tinyshakespeare", "--out", str(tmp_path / "ts"), env=_env(server, tmp_path),
                       check=False)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("lyricdist prepare: error:")
    error = proc.stderr.strip().splitlines()[-1]
    assert "sha256" in error and "nothing was kept" in error and "by hand" in error, error
    assert _visible(tmp_path / "cache") == [] and not (tmp_path / "ts").exists()


def test_giitaayan_archive_interrupted_then_fetched_and_prepared(tmp_path):
    archive = _isb_archive(tmp_path / "giit.tar.gz")
    with FakeDataServer({"/giitaayan/giit-master.tar.gz": archive}) as server:
        server.truncate.add("/giitaayan/giit-master.tar.gz")
        env = _env(server, tmp_path)
        proc = run_cli("prepare", "giitaayan", "--out", str(tmp_path / "gi"), env=env, check=False)
        error = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 1 and "stopped after" in error and "nothing was kept" in error, proc.stderr
        assert _visible(tmp_path / "cache") == []  # no partial file, not even a hidden temp file
        run_cli("prepare", "giitaayan", "--out", str(tmp_path / "gi"), "--script", "itrans", env=env)
    cached = tmp_path / "cache" / "data" / "giitaayan" / "giit-master.tar.gz"
    assert cached.read_bytes() == archive
    assert "giit-master.tar.gz" in (cached.parent / "giit-master.tar.gz.sha256").read_text()
    meta = json.loads((tmp_path / "gi" / "meta.json").read_text())
    local = run_cli("prepare", str(FIXTURES), "--out", str(tmp_path / "local"), "--script", "itrans")
    assert local.returncode == 0
    expected = json.loads((tmp_path / "local" / "meta.json").read_text())
    assert meta["sources"][0]["source"] == "giitaayan"
    assert meta["songs"] == expected["songs"] and meta["splits"] == expected["splits"]  # the same songs


def test_offline_or_missing_is_one_line_naming_the_url_and_the_way_by_hand(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: connection refused, as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"LYRICDIST_DATA_URL": f"http://127.0.0.1:{port}", "LYRICDIST_CACHE": str(tmp_path / "cache")}
    proc = run_cli("prepare", "tinyshakespeare", "--out", str(tmp_path / "ts"), env=env, check=False)
    error = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and f"http://127.0.0.1:{port}/tinyshakespeare/input.txt" in error, proc.stderr
    assert "by hand" in error and str(tmp_path / "cache" / "data" / "tinyshakespeare" / "input.txt") in error
    assert not (tmp_path / "ts").exists() and _visible(tmp_path / "cache") == []
    with FakeDataServer({}) as server:
        proc = run_cli("prepare", "giitaayan", "--out", str(tmp_path / "gi"), env=_env(server, tmp_path), check=False)
    assert proc.returncode == 1 and "answered HTTP 404" in proc.stderr.strip().splitlines()[-1], proc.stderr


def test_a_local_path_named_like_a_public_corpus_is_read_as_it_is(tmp_path, monkeypatch):
    import shutil

    from lyricdist.sources import open_source
    from lyricdist.sources.giitaayan import GiitaayanSource

    shutil.copytree(FIXTURES, tmp_path / "giitaayan")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LYRICDIST_DATA_URL", "http://127.0.0.1:9")  # would fail if it were fetched
    source = open_source("giitaayan")
    assert isinstance(source, GiitaayanSource) and source.name != "giitaayan"
