"""giitaayan ITRANS Song Book (`.isb.txt`) files -> cleaned Hindi film lyrics (char-rnn's Bollywood corpus).

Input: one `.isb.txt` file, a directory holding them (searched recursively), or a .tar/.tar.gz/.tgz/.zip archive
holding them (read member by member, never extracted to disk). Files are read in natural name order, so a
directory and its archive give the same corpus.

Format. A file holds one or more `\\startsong ... \\endsong` blocks (a file without `\\startsong` is read as one
block). Metadata lines `\\stitle{..}% \\film{..}% \\year{..}% \\starring{..}% \\singer{..}% \\music{..}% \\lyrics{..}%`
go to `Song.meta` (and `to_dataset` columns; ISB's `lyrics` is the lyricist). The lyrics are the lines between
`#indian` and `#endindian`; everything else (the `% Contributor:` / `% Transliterator:` header, `\\printtitle`)
is layout. A song (block) whose lyrics cannot be found is skipped and counted by reason (see `SKIP_REASONS`):
`no #indian block`, `#indian without #endindian`, or `no lyrics left after cleaning`; a file that fails to
parse for any other reason is skipped whole as `parse error` (with the error in `skipped_files`).

Cleaning (all scripts), in order, per line:
  - `%` starts a TeX comment to the end of the line: comment lines, `%(gloss)` / `%[word = meaning]` glosses and
    trailing editor notes all go.
  - Contributor/transliterator/credits/editor header lines and e-mail addresses go.
  - `\\threedots` (and its misspellings, `\\dots`, a bare `threedots`) means "and the refrain goes on": the
    marker goes and the line is kept once. Expanding it would mean guessing which lines follow, and a char-rnn
    learns refrains from the many songs that write them out.
  - `\\-` between letters is a hyphen (`zauq\\-e\\-nazar` -> `zauq-e-nazar`); elsewhere, with its count
    (`\\-2`, `\\- (3)`, `\\3`), it is a repeat mark: the mark goes, the line is kept once (same reason).
  - Singer labels go: `la \\:`, `ko \\;`, `kishor :`, `#Rafi:#`, `##male## \\:`, `(aa: ...` -- a short name and a
    colon at the start of a line, after `(` or after a comma; `\\:` is always a label. With no space after the
    colon (`Lata:haay`, `la:(kisii`) only one word of at most 7 letters counts as a name.
  - `##...##` escapes are English words sung in the song ("##dream-girl##"): kept as English (lowercased in
    roman, kept in Latin letters in devanagari, left inside `##` in itrans). An escape that is only a stage
    direction (`##(chorus)##`, `##Part 2##`, `##male voice##`) goes, as do `<hic>`-style notes.
  - Numbers, parentheses/brackets/braces, quotes and periods go (ITRANS dot markers such as `.n` are not
    periods); hyphens and apostrophes survive only inside words. Runs of blank lines become one stanza break.

Output scripts (`script=`):
  - `roman` (default): casual Roman Hindi, lowercase, alphabet a-z plus space, newline and , ! ? ' -
    ITRANS is resolved as follows (long vowels stay doubled, as fans type them):

        ITRANS               roman   example
        .n .N ~N ~n N        n       zi.ndagii -> zindagii, aa.Nkho.n -> aankhon, ma~Nzil -> manzil
        .D .Dh D Dh T Th     d dh d dh t th   pa.Dhe -> padhe, TuuTe -> tuute
        A I U                aa ii uu         kyA -> kyaa, kI -> kii, tU -> tuu
        K G                  kh gh            Kushii -> khushii, Gam -> gham
        Sh shh               sh               doSh -> dosh
        R^i RRi              ri               R^itu -> ritu
        GY j~n               gy               GYaan -> gyaan
        H M                  h m              duHkh -> duhkh
        _ (hiatus) .h        dropped          aa_e -> aae, maataram.h -> maataram
        other capitals       lowercase

  - `itrans`: the cleaned text left in ITRANS (case matters, so prepare does not lowercase it).
  - `devanagari`: indic_transliteration's ITRANS -> Devanagari, minus the virama it puts on every word ending in
    a consonant (ITRANS Hindi drops the inherent final "a": `dil` -> दिल्, which Hindi writes दिल).

Artist (`artist_field=`): by default every song gets the artist "giitaayan". The original char-rnn trained on one
merged text, and one artist keeps prepare's split a plain random 10% of songs: the music directors are 625
spellings for ~9.9k songs ("Laxmikant-Pyarelal" / "Laxmikant Pyarelal"), 279 with one song (those could never reach
validation) and 510 blank. With `artist_field` one of `lyricist`, `singer`, `music` or `film` the artist comes from
that metadata field: several people (`Gulzar, Tejpal Kaur`, `Rafi & Lata`, `Prem Dhawan or Anand Bakshi?`) are split
and normalised (`split_names`), the first is the song's artist and all of them go to `Song.meta["artists"]`, so
`prepare --artists+ Gulzar` also keeps songs Gulzar co-wrote; a blank field gives the artist `unknown`
(`prepare --exclude_artists+ unknown` leaves those out). The other fields stay in `Song.meta` / the dataset columns.
"""

from __future__ import annotations

import re
import tarfile
import zipfile
from collections import Counter
from pathlib import Path
from typing import Iterator

from ..errors import LyricdistError
from .registry import Song, register_source

SCRIPTS = ("roman", "itrans", "devanagari")
META_KEYS = ("stitle", "film", "year", "starring", "singer", "music", "lyrics")
META_ALIASES = {"title": "stitle", "movie": "film", "album": "film", "singers": "singer"}
ARTIST = "giitaayan"
UNKNOWN_ARTIST = "unknown"
ARTIST_FIELDS = {"lyricist": "lyrics", "singer": "singer", "music": "music", "film": "film"}  # option -> ISB key
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
ISB_SUFFIX = ".isb.txt"
SKIP_REASONS = ("no #indian block", "#indian without #endindian", "no lyrics left after cleaning", "parse error")

_META = re.compile(r"\\([A-Za-z]+)\s*\{([^{}]*)\}")
_COMMENT = re.compile(r"(?<!\\)%.*")
_HEADER = re.compile(r"(?i)^\s*(contributor|transliterat\w*|credits?|editor|comments?|date)\s*:")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+|https?://\S+")
_NOTE = re.compile(r"<[^<>]*>|\[[^\[\]]*\]")
_THREEDOTS = re.compile(r"\\(?:threedots|thredots|threeedots|thereedots|theedots|three\s*dots|dots)\b|\bthreedots\b")
_LAYOUT = re.compile(r"\\(?:printtitle|printitle|bigskip|newpage|hrule|indent|noindent|rm|it|bf|hbox|centerline)\b")
_WORD = r"[A-Za-z][\w.~'^]*+"
_NAME = rf"#*\s*{_WORD}(?:(?:\s*[+&,/]\s*|\s+(?:and\s+|aur\s+)?)(?:{_WORD}|\d+)){{0,3}}\s*#*"
_LABEL_MARK = re.compile(rf"(?:{_NAME})?\s*\\[:;]")
# `#Rafi:#` closes its hashes; `aa: ## I love ##` opens an English escape, which stays.
_LABEL_START = re.compile(
    rf"^(\s*[({{\[]?\s*)(#*)\s*(?:-+\s*)?{_NAME}\s*(?:-+\s*)?:\s*(?:-+\s*)?(?:\2(?=\s|$)|(?=\s|$))"
)
_LABEL_TIGHT = re.compile(r"^(\s*[({\[]?\s*)#*\s*[A-Za-z]{1,7}\s*:(?=[^\s:])")  # `Lata:haay`: one short name
_LABEL_AFTER = re.compile(rf"([(,]\s*){_WORD}\s*:(?=\s)")
_REPEAT = re.compile(r"(?:\\-|/-|\\)\s*\(?\s*\d+\s*\)?|\\-(?![A-Za-z])")
_ESCAPE = re.compile(r"##(.*?)##")
_DIRECTION_WORDS = frozenset(
    "male female voice voices chorus both all together laugh laughs laughing laughter music part version slow fast "
    "repeat interlude prelude pause solo duet first second humming hums whistle whistling singer singers and the "
    "of song dialogue alaap koras".split()
)
_PERIOD = re.compile(r"(?<![A-Za-z])\.|\.(?![nNDmMh])")
_PUNCT_ITRANS = re.compile(r"[0-9:;|*=+<>&\"`(){}\[\]/\\#@$]")
_ROMAN_PAIRS = (  # applied in order, so a sequence comes before any rule that would eat part of it
    ("R^i", "ri"), ("R^I", "rii"), ("RRi", "ri"), ("RRI", "rii"), ("j~n", "gy"), ("~N", "n"), ("~n", "n"),
    ("GY", "gy"), ("Sh", "sh"), ("shh", "sh"), ("A", "aa"), ("I", "ii"), ("U", "uu"), ("K", "kh"), ("G", "gh"),
    ("_", ""), ("^", ""), ("~", ""),
)
_ROMAN_DROP = re.compile(r"[^a-z ,!?'\-]")
_TEXT_FIXES = str.maketrans({"\t": " ", "\v": " ", "\f": " ", "\u00a0": " ", "\ufeff": None, "\u2013": "-",
                             "\u2014": "-", "\u2019": "'", "\u2018": "'", "\u2026": "...", "\ufffd": None})


_NAME_SPLIT = re.compile(r"\s*(?:[,;&/+]|\band\b|\baur\b|\bor\b|\bwith\b)\s*", re.I)


def normalise_name(name: str) -> str:
    """One spelling per person: no `?`/periods/quotes, single spaces, and all-lower or ALL-CAPS names title-cased
    (`D. N. Madhok` -> `D N Madhok`, `anand bakshi` -> `Anand Bakshi`); other capitalisation is kept as written."""
    name = re.sub(r"[?.\"()\[\]{}]|^late\s+", " ", name.strip(), flags=re.I)
    name = " ".join(name.split()).strip(" -'")
    if name and (name.islower() or name.isupper()):
        name = " ".join(w[:1].upper() + w[1:].lower() for w in name.split())
    return name


def split_names(field: str) -> list[str]:
    """The normalised names of a metadata field listing one or more people, in order, each once."""
    names = [normalise_name(n) for n in _NAME_SPLIT.split(field or "")]
    return list(dict.fromkeys(n for n in names if n))


def decode(data: bytes) -> tuple[str, bool]:
    """UTF-8, else Windows-1252 (a handful of archive files); returns (text, was_cp1252)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), True


def parse_isb(text: str, skipped: list[str] | None = None) -> list[tuple[dict, str]]:
    """Split ISB text into songs: [(metadata, raw ITRANS lyrics between #indian and #endindian)].

    A block with no `#indian`, or an `#indian` without `#endindian`, is left out (one bad song in a file of
    several costs only that song) and its reason appended to `skipped`."""
    blocks = re.findall(r"\\startsong\b(.*?)(?:\\endsong\b|\Z)", text, re.S) or [text]
    songs = []
    for block in blocks:
        meta = {k: "" for k in META_KEYS}
        for key, value in _META.findall(block):
            key = META_ALIASES.get(key.lower(), key.lower())
            if key in meta and not meta[key]:
                meta[key] = " ".join(value.split())
        lines = block.splitlines()
        marks = [_COMMENT.sub("", line).strip() for line in lines]
        starts = [i for i, mark in enumerate(marks) if mark == "#indian"]
        ends = [i for i, mark in enumerate(marks) if starts and mark == "#endindian" and i > starts[0]]
        if not ends:
            if skipped is not None:
                skipped.append(SKIP_REASONS[0] if not starts else SKIP_REASONS[1])
            continue
        songs.append((meta, "\n".join(lines[starts[0] + 1 : ends[0]])))
    return songs


def _names_a_part(text: str) -> bool:
    """Only words such as `female`, `chorus`, `part 2`: a stage direction, not lyrics."""
    words = re.findall(r"[a-z]+|\d+", text.lower())
    return bool(words) and all(w in _DIRECTION_WORDS or w.isdigit() for w in words)


def _is_direction(escape: str) -> bool:
    inner = escape.strip()
    return not re.search(r"[A-Za-z]", inner) or (inner.startswith("(") and inner.endswith(")")) or _names_a_part(inner)


def _clean_common(line: str) -> list[tuple[bool, str]]:
    """Script-independent cleaning of one ITRANS line -> [(is_english, text)] segments."""
    line = _COMMENT.sub("", line.translate(_TEXT_FIXES))
    if _HEADER.match(line):
        return []
    line = _EMAIL.sub(" ", line)
    line = _NOTE.sub(" ", line)
    line = _THREEDOTS.sub(" ", line)
    line = _LAYOUT.sub(" ", line)
    if "\\:" in line or "\\;" in line:
        line = _LABEL_MARK.sub(" ", line)
    line = _LABEL_START.sub(r"\1", line)
    line = _LABEL_TIGHT.sub(r"\1", line)
    line = _LABEL_AFTER.sub(r"\1", line)
    line = _REPEAT.sub(" ", line)
    line = re.sub(r"\\-", "-", line)  # the hyphen between letters (repeat marks are gone)
    line = re.sub(r"\\([.'?!,&_])", r"\1", line)  # escaped literal characters
    line = re.sub(r"\\+", " ", line)  # typos such as `jaan\-e-\man`: keep the word, drop the backslash
    if _names_a_part(line):
        return []  # a line that only names a part or a voice: `Female Singer 1`, `##Part 2##`, `(chorus)`
    segments = []
    for i, piece in enumerate(_ESCAPE.split(line)):
        english = i % 2 == 1
        if english and _is_direction(piece):
            continue
        piece = _PERIOD.sub(" ", piece) if not english else piece.replace(".", " ")
        if english:
            piece = re.sub(r"[^A-Za-z ,!?'\-]", " ", piece)
        else:
            piece = _PUNCT_ITRANS.sub(" ", piece)
            piece = re.sub(r"(?<=[\s,])~+|~+(?=[\s,]|$)", " ", piece)  # `ho~`: a drawn-out vowel, not ~N/~n
        piece = re.sub(r"(?<![A-Za-z])['\-]+|['\-]+(?![A-Za-z])", " ", piece)
        if piece.strip():
            segments.append((english, " ".join(piece.split())))
    return segments


def itrans_to_roman(text: str) -> str:
    """Resolve ITRANS markers into casual Roman Hindi (table in the module docstring)."""
    text = re.sub(r"(?<=[A-Za-z])\.h\b", "", text)
    text = re.sub(r"(?<=[A-Za-z])\.(?=[nNmM])|\.(?=D)", "", text)  # `.D` also starts a word: `.Dhuu.NDh`
    for itrans, roman in _ROMAN_PAIRS:
        text = text.replace(itrans, roman)
    return text.lower()


def itrans_to_devanagari(text: str) -> str:
    from ..options import require

    sanscript = require("indic_transliteration.sanscript", "indic", "--script devanagari")

    explicit_halant = "\ue000"  # ITRANS `.h` asks for the virama: keep it through the word-final clean-up
    out = sanscript.transliterate(text.replace(".h", explicit_halant), sanscript.ITRANS, sanscript.DEVANAGARI)
    out = re.sub("\u094d(?![\u0900-\u097f\u200c\u200d])", "", out)
    out = re.sub("[\u0964\u0965^]", " ", out)  # dandas from stray ITRANS periods, a `^` it did not use
    return " ".join(out.replace(explicit_halant, "\u094d").split())


def _render(segments: list[tuple[bool, str]], script: str) -> str:
    parts = []
    for english, text in segments:
        if script == "roman":
            text = text.lower() if english else itrans_to_roman(text)
            text = _ROMAN_DROP.sub(" ", text)
            text = re.sub(r"(?<![a-z])['\-]+|['\-]+(?![a-z])", " ", text)
        elif script == "itrans":
            text = f"##{text}##" if english else text
        elif not english:
            text = itrans_to_devanagari(text)
        parts.append(text)
    line = " ".join(" ".join(parts).split())
    line = re.sub(r"\s+([,!?])", r"\1", line)
    line = re.sub(r"([,!?])[,!?]+", r"\1", line)
    line = re.sub(r"^[,!?\s]+", "", line)
    return line if re.search(r"\w", line) else ""


def clean_lyrics(raw: str, script: str = "roman") -> str:
    """Cleaned lyrics in SCRIPT: one line per sung line, one blank line between stanzas ('' if nothing is left)."""
    if script not in SCRIPTS:
        raise LyricdistError(f"unknown giitaayan script {script!r}; choose one of {', '.join(SCRIPTS)}")
    out: list[str] = []
    for raw_line in raw.splitlines():
        stripped = raw_line.strip()
        if stripped.startswith("%"):
            continue  # a comment line is not a stanza break
        line = _render(_clean_common(raw_line), script)
        if line:
            out.append(line)
        elif not stripped and out and out[-1]:
            out.append("")
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n" if out else ""


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def iter_isb_files(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every `.isb.txt` in a file, directory or archive, in natural name order."""
    path = Path(path)
    if path.is_dir():
        for p in sorted(path.rglob(f"*{ISB_SUFFIX}"), key=lambda p: _natural_key(str(p.relative_to(path)))):
            yield str(p.relative_to(path)), p.read_bytes()
    elif path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            names = sorted((n for n in zf.namelist() if n.endswith(ISB_SUFFIX)), key=_natural_key)
            for name in names:
                yield name, zf.read(name)
    elif _is_archive(path):
        with tarfile.open(path, "r:*") as tf:  # read in archive order: seeking back in a .gz re-inflates it
            files = {m.name: tf.extractfile(m).read() for m in tf if m.isfile() and m.name.endswith(ISB_SUFFIX)}
        for name in sorted(files, key=_natural_key):
            yield name, files[name]
    else:
        yield path.name, path.read_bytes()


def is_giitaayan(spec: str) -> bool:
    """A `.isb.txt` file, or a directory / tar / zip archive that holds one."""
    path = Path(spec)
    try:
        if path.is_dir():
            return next(path.rglob(f"*{ISB_SUFFIX}"), None) is not None
        if not path.is_file():
            return False
        if path.name.endswith(ISB_SUFFIX):
            return True
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                return any(n.endswith(ISB_SUFFIX) for n in zf.namelist())
        if _is_archive(path):
            with tarfile.open(path, "r:*") as tf:
                return any(m.name.endswith(ISB_SUFFIX) for m in tf)
    except (OSError, tarfile.TarError, zipfile.BadZipFile):
        return False
    return False


class GiitaayanSource:
    """Songs of a giitaayan ISB file, directory or archive, in `script` (roman, itrans or devanagari)."""

    kind = "songs"

    def __init__(self, path: str, script: str | None = "roman", artist_field: str | None = None, **_: object):
        script = script or "roman"
        if script not in SCRIPTS:
            raise LyricdistError(f"--script {script!r} is not one of {', '.join(SCRIPTS)}")
        if artist_field is not None and artist_field not in ARTIST_FIELDS:
            raise LyricdistError(f"--artist_field {artist_field!r} is not one of {', '.join(ARTIST_FIELDS)}")
        self.artist_field = artist_field
        self.path = Path(path)
        if not self.path.exists():
            raise LyricdistError(f"giitaayan source {str(self.path)!r} does not exist")
        self.script = script
        self.name = f"giitaayan:{self.path}"
        self.default_lowercase = script == "roman"  # itrans case is meaningful; devanagari has none
        self._stats: dict | None = None

    def songs(self) -> Iterator[Song]:
        files = 0
        cp1252: list[str] = []
        skipped: Counter = Counter()
        skipped_files: dict[str, list[str]] = {}
        n_chars = 0
        vocabulary: set[str] = set()
        n_songs = 0
        blocks = 0
        try:
            for name, data in iter_isb_files(self.path):
                files += 1
                text, was_cp1252 = decode(data)
                if was_cp1252:
                    cp1252.append(name)
                reasons: list[str] = []
                try:
                    found = self._file_songs(name, text, reasons)
                except Exception as e:  # noqa: BLE001 -- one malformed file must not abort a 10k-file prepare
                    found, reasons = [], [SKIP_REASONS[3]]
                    name = f"{name} ({type(e).__name__}: {e})"
                for why in reasons:
                    skipped[why] += 1
                    skipped_files.setdefault(why, []).append(name)
                blocks += len(found) + len(reasons)
                for song in found:
                    n_songs += 1
                    n_chars += len(song.text)
                    vocabulary.update(song.text)
                    yield song
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
            raise LyricdistError(f"cannot read giitaayan archive {self.path}: {e}; check the download") from None
        if files == 0:
            raise LyricdistError(f"{self.path} holds no {ISB_SUFFIX} files; give giitaayan ISB files or an archive")
        self._stats = {
            "script": self.script,
            "artist_field": self.artist_field,
            "files": files,
            "blocks": blocks,
            "songs_parsed": n_songs,
            "skipped": dict(sorted(skipped.items())),
            "skipped_files": {k: v[:20] for k, v in sorted(skipped_files.items())},
            "decoded_cp1252": cp1252,
            "chars": n_chars,
            "vocab_size": len(vocabulary),
            "vocabulary": "".join(sorted(vocabulary)),
        }

    def _file_songs(self, name: str, text: str, skipped: list[str]) -> list[Song]:
        """The cleaned songs of one file (cleaned before any is yielded, so a failure skips the whole file)."""
        songs = []
        for meta, raw in parse_isb(text, skipped):
            lyrics = clean_lyrics(raw, self.script)
            if not lyrics:
                skipped.append(SKIP_REASONS[2])
                continue
            title = clean_lyrics(meta["stitle"], self.script).strip() or meta["stitle"]
            artists = [ARTIST]
            if self.artist_field:
                value = meta[ARTIST_FIELDS[self.artist_field]]
                names = [normalise_name(value)] if self.artist_field == "film" else split_names(value)  # "Ram aur Shyam"
                artists = [n for n in names if n] or [UNKNOWN_ARTIST]
            songs.append(Song(text=lyrics, artist=artists[0], title=title,
                              meta={"file": name, **meta, "artists": artists}))
        return songs

    def stats(self) -> dict:
        """Parse counts, skips by reason, characters and vocabulary of the last `songs()` pass."""
        if self._stats is None:
            for _ in self.songs():
                pass
        return self._stats


def to_dataset(path: str | Path, script: str = "roman", artist_field: str | None = None):
    """The songs as a `datasets.Dataset`: text, artist, title, file and the ISB metadata columns."""
    import datasets

    rows = list(GiitaayanSource(str(path), script=script, artist_field=artist_field).songs())
    columns = {"text": [s.text for s in rows], "artist": [s.artist for s in rows], "title": [s.title for s in rows],
               "file": [s.meta["file"] for s in rows]}
    for key in META_KEYS:
        columns[key] = [s.meta[key] for s in rows]
    return datasets.Dataset.from_dict(columns)


register_source("giitaayan", is_giitaayan, GiitaayanSource)
