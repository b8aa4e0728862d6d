"""Public corpora fetched from their public homes into lyricdist's cache: `prepare tinyshakespeare`, `prepare giitaayan`.

* tinyshakespeare -- char-rnn's `input.txt` (Karpathy's char-rnn repository, data/tinyshakespeare): 1,115,394 bytes,
  its sha256 checked after every download. Read as plain text (the artist is `tinyshakespeare`).
* giitaayan -- the ITRANS Song Book (`.isb.txt`) files of giitaayan.com. giitaayan.com serves them from the GitHub
  repository v9y/giit (`docs/NNNN.isb.txt`, one file a song, the URLs its own pages fetch); there is no archive of
  its own, so the one archive is GitHub's of that repository (its `master` branch). The repository grows, so no
  checksum is fixed: the sha256 of what was fetched is printed and kept beside it. Read as giitaayan ISB files
  (`--script`, `--artist_field` apply).

Where: `$LYRICDIST_CACHE/data/NAME/FILE` (default ~/.cache/lyricdist). A cached file is used as it is, without the
network (delete it to fetch again). `LYRICDIST_DATA_URL` replaces the public homes with a base URL that serves
`NAME/FILE` (tinyshakespeare/input.txt, giitaayan/giit-master.tar.gz): a mirror, a proxy, a test server.

A download streams into a hidden temp file beside its destination with a progress bar (stderr), is checked, and
only then renamed into place, so an interrupted or wrong download never leaves a file that looks complete. When the
network fails, one line names the URL and the ways to provide the file by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import LyricdistError
from .registry import register_source

BASE_URL_ENV = "LYRICDIST_DATA_URL"
TIMEOUT_S = 30.0
CHUNK = 1 << 16


@dataclass(frozen=True)
class PublicCorpus:
    name: str
    url: str  # its public home
    file: str  # the cached file's name (and its path under a LYRICDIST_DATA_URL mirror: NAME/FILE)
    sha256: str | None = None  # known for a fixed file
    size: int | None = None
    home: str = ""  # in words, for messages and docs

    def source_url(self) -> str:
        base = os.environ.get(BASE_URL_ENV)
        return f"{base.rstrip('/')}/{self.name}/{self.file}" if base else self.url

    def cached(self) -> Path:
        from ..fileio import cache_root

        return cache_root() / "data" / self.name / self.file


CORPORA = {
    c.name: c
    for c in (
        PublicCorpus("tinyshakespeare",
                     "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                     "input.txt", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", 1115394,
                     "Karpathy's char-rnn repository"),
        PublicCorpus("giitaayan", "https://github.com/v9y/giit/archive/refs/heads/master.tar.gz",
                     "giit-master.tar.gz", home="giitaayan.com's ISB files (GitHub repository v9y/giit)"),
    )
}


def _user_agent() -> str:
    from ..version import __version__

    return f"lyricdist/{__version__}"


def fetch(corpus: PublicCorpus, quiet: bool = False) -> Path:
    """The corpus's file in the cache, downloaded (atomically, checked) when it is not there yet."""
    target = corpus.cached()
    if target.is_file():
        return target
    url = corpus.source_url()
    by_hand = (f"download it by hand from that URL and run `lyricdist prepare PATH ...` on the file, or put it at "
               f"{target}")
    if not quiet:
        print(f"{corpus.name}: downloading {url} into {target.parent}", file=sys.stderr)
    from tqdm import tqdm

    from ..fileio import atomic_file

    digest, size = hashlib.sha256(), 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": _user_agent()})
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, atomic_file(target) as out:
            total = response.headers.get("Content-Length")
            with tqdm(total=int(total) if total and total.isdigit() else None, unit="B", unit_scale=True,
                      desc=corpus.name, disable=quiet, leave=False, file=sys.stderr) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
            if total and total.isdigit() and size != int(total):
                raise LyricdistError(f"the download of {corpus.name} from {url} stopped after {size:,} of "
                                     f"{int(total):,} bytes; nothing was kept; run the command again, or {by_hand}")
            if corpus.sha256 and digest.hexdigest() != corpus.sha256:
                raise LyricdistError(f"{url} sent a file whose sha256 is {digest.hexdigest()}, not {corpus.name}'s "
                                     f"{corpus.sha256}; nothing was kept; check the URL ({BASE_URL_ENV}?), or "
                                     f"{by_hand}")
    except urllib.error.HTTPError as e:
        raise LyricdistError(f"could not download {corpus.name}: {url} answered HTTP {e.code} {e.reason}; "
                             f"{by_hand}") from None
    except http.client.HTTPException as e:  # e.g. IncompleteRead: the connection closed mid-file
        raise LyricdistError(f"the download of {corpus.name} from {url} stopped after {size:,} bytes "
                             f"({type(e).__name__}); nothing was kept; run the command again, or {by_hand}") from None
    except (urllib.error.URLError, OSError, socket.timeout, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise LyricdistError(f"could not download {corpus.name} from {url} ({reason}; offline?); {by_hand}") from None
    from ..fileio import atomic_write_text

    atomic_write_text(target.with_name(target.name + ".sha256"), f"{digest.hexdigest()}  {target.name}  {url}\n")
    if not quiet:
        print(f"{corpus.name}: {size:,} bytes, sha256 {digest.hexdigest()}, in {target}", file=sys.stderr)
    return target


def is_public(spec: str) -> bool:
    """`tinyshakespeare` or `giitaayan`, the bare name (a file or directory of that name here wins)."""
    return spec in CORPORA and not Path(spec).exists()


def open_public(spec: str, **options):
    """The source of a public corpus, fetched into the cache first (the cached copy when it is there)."""
    corpus = CORPORA.get(spec)
    if corpus is None:
        raise LyricdistError(f"no public corpus named {spec!r}; choose one of {', '.join(CORPORA)}")
    path = fetch(corpus)
    if corpus.name == "tinyshakespeare":
        from .text import TextFileSource

        source = TextFileSource(str(path), **options)
        source.artist = corpus.name
    else:
        from .giitaayan import GiitaayanSource

        source = GiitaayanSource(str(path), **options)
    source.name = corpus.name
    return source


register_source("public", is_public, open_public)
