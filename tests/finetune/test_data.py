import json

import pytest
import torch

from finetune.data import (IGNORE, DataError, Stream, collate, pack, packed_blocks, pretraining_data,
                           sft_data, split_heldout, text_files, tokenize_joined)
from finetune.model import load_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_model):
    return load_tokenizer(tiny_model)


def test_documents_joined_with_eos(tok):
    ids = tokenize_joined(["one two", "", "three"], tok)
    assert ids.count(tok.eos_token_id) == 2 and ids[-1] == tok.eos_token_id


def test_pack_blocks_have_exact_length_and_drop_tail():
    blocks = pack(list(range(10)), 4)
    assert blocks.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_data_shorter_than_a_block_is_refused():
    with pytest.raises(DataError, match="fewer than one block"):
        pack(list(range(3)), 4)


def test_heldout_split_keeps_one_to_train():
    blocks = torch.arange(20).view(10, 2)
    train, held = split_heldout(blocks, 0.15)
    assert len(train) == 8 and len(held) == 2
    assert len(split_heldout(blocks[:1], 0.5)[1]) == 0


def test_folders_jsonl_and_missing_paths(tmp_path, tok, tiny_model):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "hello world " * 50}) + "\n\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("the sky is blue " * 50)
    (tmp_path / "ignored.bin").write_bytes(b"\0")
    assert [f.name for f in text_files([tmp_path])] == ["a.jsonl", "b.txt"]
    blocks = packed_blocks([tmp_path], tok, tiny_model, 32, log=lambda _: None)
    assert blocks.shape[1] == 32 and blocks.shape[0] > 2
    with pytest.raises(DataError, match="does not exist"):
        text_files([tmp_path / "nope"])
    (tmp_path / "bad.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        packed_blocks([tmp_path / "bad.jsonl"], tok, tiny_model, 32)


def test_empty_data_is_refused(tmp_path, tok, tiny_model):
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="no text"):
        packed_blocks([tmp_path], tok, tiny_model, 32)


def test_tokenized_cache_is_reused(corpus, tok, tiny_model):
    logs = []
    first = packed_blocks([corpus], tok, tiny_model, 64, log=logs.append)
    second = packed_blocks([corpus], tok, tiny_model, 64, log=logs.append)
    assert len(logs) == 1 and torch.equal(first, second)
    packed_blocks([corpus], tok, tiny_model, 32, log=logs.append)  # another length: new entry
    assert len(logs) == 2


def test_pretraining_labels_are_inputs(corpus, tok, tiny_model):
    data = pretraining_data([corpus], tok, tiny_model, 64, 0.1, log=lambda _: None)
    assert data.heldout and all(torch.equal(s["input_ids"], s["labels"]) for s in data.train)


def test_the_data_s_origin_tells_two_texts_apart_and_names_the_packages(corpus, tok, tiny_model):
    quiet = lambda _: None  # noqa: E731
    before = pretraining_data([corpus], tok, tiny_model, 64, 0.1, log=quiet).origin
    assert before == pretraining_data([corpus], tok, tiny_model, 64, 0.1, log=quiet).origin
    assert before["files"] == len(list(corpus.glob("*.txt"))) and before["sources"] == []
    (corpus / "SOURCES").write_text("grep_3.8-5_amd64\nsed_4.9-1+deb12u1_amd64\n")
    doc = corpus / "doc0.txt"  # prose
    doc.write_text(doc.read_text().replace("the", "a", 1))  # a point release changes one word
    after = pretraining_data([corpus], tok, tiny_model, 64, 0.1, log=quiet).origin
    assert after["sources"] == ["grep_3.8-5_amd64", "sed_4.9-1+deb12u1_amd64"]
    assert after["tokens_sha256"] != before["tokens_sha256"] and after["files"] == before["files"]


def test_sft_loss_on_answer_only(tmp_path, tok):
    path = tmp_path / "sft.json"
    path.write_text(json.dumps([{"instruction": "What is blue?", "output": "The sky."},
                                {"instruction": "Say", "input": "green", "output": "green"}]))
    data = sft_data(path, tok, 256, 0.0)
    sample = data.train[0]
    answer = sample["labels"][sample["labels"] != IGNORE].tolist()
    assert tok.decode(answer) == "The sky." + tok.eos_token
    prompt = tok.decode(sample["input_ids"][: len(sample["input_ids"]) - len(answer)])
    assert prompt == "[INST]What is blue?[/INST]"


@pytest.mark.parametrize("content, match", [("{}", "non-empty JSON list"), ("[{\"output\": 1}]", "lacks"),
                                            ("nope", "not valid JSON")])
def test_sft_bad_files(tmp_path, tok, content, match):
    path = tmp_path / "sft.json"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        sft_data(path, tok, 64, 0.0)


def test_collate_right_pads_and_masks():
    batch = collate([{"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([5, 6, 7])},
                     {"input_ids": torch.tensor([8]), "labels": torch.tensor([8])}], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"][1].tolist() == [8, IGNORE, IGNORE]
    assert batch["attention_mask"][1].tolist() == [1, 0, 0]


def sample(i):
    return {"input_ids": torch.tensor([i]), "labels": torch.tensor([i])}


def test_stream_resumes_exactly_and_covers_each_epoch():
    samples = [sample(i) for i in range(5)]
    whole = Stream(samples, 1, seed=3, pad_id=0)
    seen = [int(whole.next()["input_ids"]) for _ in range(10)]
    assert sorted(seen[:5]) == list(range(5)) and sorted(seen[5:]) == list(range(5))
    part = Stream(samples, 1, seed=3, pad_id=0)
    part.load_state_dict({"consumed": 4})
    assert [int(part.next()["input_ids"]) for _ in range(6)] == seen[4:]


def test_stream_ranks_split_each_global_batch():
    samples = [sample(i) for i in range(8)]
    single = Stream(samples, 2, seed=0, pad_id=0)
    ranks = [Stream(samples, 1, seed=0, pad_id=0, rank=r, world=2) for r in range(2)]
    for _ in range(3):
        together = single.next()["input_ids"].view(-1).tolist()
        assert [int(s.next()["input_ids"]) for s in ranks] == together
