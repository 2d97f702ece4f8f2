"""The demo's data generator and BPE vocabulary builder (NLG/demo/; its table is nlg.report's:
tests/test_report.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "NLG" / "demo"

import build_vocab  # noqa: E402
import make_data  # noqa: E402

E2E_LABELS = {"name", "Type", "food", "price", "customer rating", "area", "family friendly", "near"}


def run(script, *args, cwd=None):
    return subprocess.run([sys.executable, str(DEMO / script), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def parse_split(path):
    by_mr = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        assert line.count("||") == 1, f"{path}:{n}"
        mr, ref = line.split("||")
        by_mr.setdefault(mr, []).append(ref)
    return by_mr


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    r = run("make_data.py", "--out_dir", out, "--seed", 3, "--n_train", 50, "--n_valid", 6, "--n_test", 8,
            "--train_refs", 2, "--test_refs", 4, "--n_pretrain", 120)
    assert r.returncode == 0, r.stderr
    return out


def test_make_data_is_deterministic_by_seed(small_data, tmp_path):
    args = ["--n_train", 50, "--n_valid", 6, "--n_test", 8, "--train_refs", 2, "--test_refs", 4, "--n_pretrain", 120]
    assert run("make_data.py", "--out_dir", tmp_path / "same", "--seed", 3, *args).returncode == 0
    assert run("make_data.py", "--out_dir", tmp_path / "other", "--seed", 4, *args).returncode == 0
    names = sorted(os.listdir(small_data))
    assert names == sorted(os.listdir(tmp_path / "same"))
    for name in names:
        assert (small_data / name).read_bytes() == (tmp_path / "same" / name).read_bytes(), name
    assert (small_data / "train.txt").read_bytes() != (tmp_path / "other" / "train.txt").read_bytes()


def test_splits_are_e2e_lines_with_disjoint_mrs_and_several_references(small_data):
    splits = {s: parse_split(small_data / f"{s}.txt") for s in ("train", "valid", "test")}
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [50, 6, 8]
    assert not set(splits["train"]) & set(splits["test"])
    assert not set(splits["train"]) & set(splits["valid"])
    assert not set(splits["valid"]) & set(splits["test"])
    for split, want in (("train", 2), ("test", 4)):
        for mr, refs in splits[split].items():
            assert 1 <= len(refs) <= want and len(set(refs)) == len(refs)
            fields = dict(part.split(" : ", 1) for part in mr.split(" | "))
            assert set(fields) <= E2E_LABELS and "name" in fields and len(fields) >= 3
            for ref in refs:  # every reference names the venue, and the venue it is near
                assert fields["name"] in ref
                if "near" in fields:
                    assert fields["near"] in ref
    # the test references are varied, not one template
    assert sum(len(set(refs)) for refs in splits["test"].values()) == sum(len(r) for r in splits["test"].values())
    assert max(len(r) for r in splits["test"].values()) == 4


def test_pretraining_text_is_formatted_jsonl_without_the_mr_format(small_data):
    docs = (small_data / "pretrain.txt").read_text(encoding="utf-8").splitlines()
    recs = [json.loads(line) for f in ("pretrain_formatted.jsonl", "pretrain_valid_formatted.jsonl")
            for line in (small_data / f).read_text(encoding="utf-8").splitlines()]
    assert len(docs) == 120 and sorted(r["completion"] for r in recs) == sorted(docs)
    assert all(r["context"] == "" for r in recs)
    assert not any("||" in d or " | " in d for d in docs)


def test_make_data_rejects_bad_sizes(tmp_path):
    r = run("make_data.py", "--out_dir", tmp_path, "--n_test", 0)
    assert r.returncode != 0 and "--n_test" in r.stderr


@pytest.fixture(scope="module")
def vocab(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab")
    r = run("build_vocab.py", small_data / "train.txt", small_data / "pretrain.txt", "--out_dir", out,
            "--vocab_size", 400)
    assert r.returncode == 0, r.stderr
    return out


def test_vocab_files_have_gpt2_layout(vocab):
    enc = json.loads((vocab / "encoder.json").read_text(encoding="utf-8"))
    lines = (vocab / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    assert lines[0] == "#version: 0.2" and lines[-1] == ""  # header, then a trailing newline
    merges = [tuple(m.split(" ")) for m in lines[1:-1]]
    assert all(len(m) == 2 for m in merges)
    assert sorted(enc.values()) == list(range(len(enc))) and len(enc) <= 400
    assert enc["<|endoftext|>"] == len(enc) - 1
    b2u = build_vocab.bytes_to_unicode()
    assert all(enc[ch] < 256 for ch in b2u.values())
    assert all(a + b in enc for a, b in merges)


def test_vocab_round_trips_through_the_project_encoder(vocab, small_data):
    from nlg import encoder
    enc = encoder.get_encoder(str(vocab))
    assert enc.eos_id == len(enc.encoder) - 1
    text = (small_data / "test.txt").read_text(encoding="utf-8")
    lines = text.splitlines() + ["Zürich café, naïve 東京 🍜 £30!\ttabs  and   spaces"]
    for line in lines:
        ids = enc.encode(line)
        assert enc.decode(ids) == line
    # the merges compress the corpus well below one token per byte
    sample = " ".join(text.splitlines()[:20])
    assert len(enc.encode(sample)) < len(sample.encode("utf-8")) / 2.5


def test_vocab_loads_in_hugging_face_gpt2_tokenizer_with_the_same_ids(vocab, small_data):
    transformers = pytest.importorskip("transformers")
    from nlg import encoder
    hf = transformers.GPT2Tokenizer(str(vocab / "encoder.json"), str(vocab / "vocab.bpe"))
    enc = encoder.get_encoder(str(vocab))
    for line in (small_data / "test.txt").read_text(encoding="utf-8").splitlines()[:20]:
        assert hf.encode(line) == enc.encode(line)


def test_bpe_training_merges_the_most_frequent_pair_first():
    counts = {"aaab": 5, "ab": 3, "ba": 1}
    merges = build_vocab.train_bpe(counts, 10)
    # pair counts: aa 10, ab 8, ba 1 -> "a a"; then aaab = [aa, a, b]: (aa, a) 5, (a, b) 8 -> "a b";
    # then (aa, ab) 5 -> "aa ab"; only "b a" (once) is left, and a pair seen once is not merged.
    assert merges == [("a", "a"), ("a", "b"), ("aa", "ab")]


def test_build_vocab_errors_name_the_problem(tmp_path):
    r = run("build_vocab.py", tmp_path / "nope.txt", "--out_dir", tmp_path / "v")
    assert r.returncode != 0 and "nope.txt" in r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "a", "completion": "b"}\nnot json\n')
    r = run("build_vocab.py", bad, "--out_dir", tmp_path / "v")
    assert r.returncode != 0 and "bad.jsonl:2" in r.stderr
    r = run("build_vocab.py", bad, "--out_dir", tmp_path / "v", "--vocab_size", 100)
    assert r.returncode != 0 and "--vocab_size" in r.stderr


def test_fact_cards_never_state_a_held_out_mr_and_task_raw_files_convert(tmp_path, monkeypatch):
    """The pretraining corpus's fact cards (what teaches the base to copy) never give away a
    valid or test MR; --task_raw writes the same splits in every NLG task's raw format, and the
    tasks' own converters read them back to the same references."""
    import random
    held = {make_data.mr_key(make_data.sample_mr(random.Random(i))) for i in range(200)}
    carded = []
    real = make_data.fact_card
    monkeypatch.setattr(make_data, "fact_card", lambda mr, rng: carded.append(mr) or real(mr, rng))
    rng = random.Random(0)
    docs = [make_data.pretrain_doc(rng, frozenset(held)) for _ in range(400)]
    assert 100 < len(carded) < 300 and sum(d.startswith("Card : ") for d in docs) == len(carded)
    assert not {make_data.mr_key(m) for m in carded} & held
    monkeypatch.undo()
    out, raw = tmp_path / "demo", tmp_path / "raw"
    make_data.main(["--out_dir", str(out), "--n_train", "12", "--n_valid", "3", "--n_test", "4",
                    "--n_pretrain", "10", "--task_raw", str(raw)])
    from nlg import format_converting_dart as dart, format_converting_webnlg as webnlg
    from nlg.tasks import TASKS
    e2e_refs = [ln.split("||")[1] for ln in (out / "test.txt").read_text().splitlines()]
    web, cats = webnlg.convert_entries(json.loads((raw / TASKS["webnlg"].raw[1][1]).read_text()), "w")
    assert [r["completion"] for r in web] == e2e_refs and set(cats) == {"Building", "Restaurant"}
    assert {r["cate"] for r in web} == {True, False}       # both --filter halves have examples
    d = dart.convert_entries(json.loads((raw / TASKS["dart"].raw[1][1]).read_text()), "d")
    assert [r["completion"] for r in d] == e2e_refs
    assert (raw / "e2e" / "test.txt").read_text() == (out / "test.txt").read_text()
