"""The default corpus keeps one (modern) edition per work and no metadata file."""

from finetune import corpus


def test_one_edition_per_work(tmp_path, monkeypatch):
    folder = tmp_path / "c"
    folder.mkdir()
    for name in ("twelfth_night_gut.txt", "twelfe-night_gut_f.txt", "lear_gut.txt", "lear_gut_f.txt",
                 "metadata.txt", "sonnets_gut.txt"):
        (folder / name).write_text("x")
    monkeypatch.setattr(corpus, "corpus_dir", lambda: folder)
    names = [p.name for p in corpus.default_corpus_files(log=lambda *_: None)]
    assert names == ["lear_gut.txt", "sonnets_gut.txt", "twelfth_night_gut.txt"]
