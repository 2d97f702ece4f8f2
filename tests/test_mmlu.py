"""NLG/MetaMathQA/mmlu.py and eval_mmlu.py: QLoRA's MMLU scoring (qlora.py's MMLUEvalCallback,
transcribed below) on hand-made logits, the file reader's errors, and a tiny random LLaMA run
end to end over rows of QLoRA's zero-shot MMLU file (../shared; skipped without it)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import eval_mmlu  # noqa: E402
import mmlu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IGNORE = -100


def qlora_scores(batches, subject, abcd_idx, split):
    """NOLA llama/qlora.py lines 769-796 (MMLUEvalCallback.on_evaluate), fed the batches'
    (loss, logits, labels) instead of trainer.prediction_step; evaluate's "accuracy" is the
    share of equal pairs."""
    preds, refs = [], []
    loss_mmlu = 0
    for loss, logits, labels in batches:
        batch = {"labels": labels}
        for i, logit in enumerate(logits):
            label_non_zero_id = (batch["labels"][i] != -100).nonzero()[0][0]
            logit_abcd = logit[label_non_zero_id - 1][abcd_idx]
            preds.append(torch.argmax(logit_abcd).item())
        labels = labels[labels != IGNORE].view(-1, 2)[:, 0]
        refs += [abcd_idx.index(label) for label in labels.tolist()]
        loss_mmlu += loss.item()
    results = {"mmlu_loss": loss_mmlu / len(batches)}
    subjects = {s: {"refs": [], "preds": []} for s in set(subject)}
    for s, p, r in zip(subject, preds, refs):
        subjects[s]["preds"].append(p)
        subjects[s]["refs"].append(r)
    subject_scores = []
    for subject in subjects:
        pairs = list(zip(subjects[subject]["refs"], subjects[subject]["preds"]))
        subject_score = sum(r == p for r, p in pairs) / len(pairs)
        results[f"mmlu_{split}_accuracy_{subject}"] = subject_score
        subject_scores.append(subject_score)
    results[f"mmlu_{split}_accuracy"] = np.mean(subject_scores)
    return results


def fake_batches(seed=0, vocab=40, abcd=(7, 11, 13, 17), eos=2, batch_sizes=(3, 3, 2, 1)):
    """Right-padded batches as the collator makes them: random source lengths, target = one
    letter token + EOS, random logits (no ties)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for b in batch_sizes:
        src = torch.randint(2, 9, (b,), generator=g).tolist()
        width = max(src) + 2
        labels = torch.full((b, width), IGNORE)
        for i, n in enumerate(src):
            labels[i, n] = abcd[int(torch.randint(4, (1,), generator=g))]
            labels[i, n + 1] = eos
        logits = torch.randn(b, width, vocab, generator=g)
        loss = torch.rand((), generator=g) * 3
        batches.append((loss, logits, labels))
    return batches


def test_scoring_equals_qlora_transcription():
    abcd = [7, 11, 13, 17]
    batches = fake_batches(abcd=tuple(abcd))
    n = sum(len(b[2]) for b in batches)
    subjects = [["algebra", "anatomy", "virology"][i % 3] for i in range(n)]
    want = qlora_scores(batches, subjects, abcd, "test")
    preds, refs, first = [], [], 0
    for _, logits, labels in batches:
        p, r = mmlu.score_batch(logits, labels, abcd, first)
        preds, refs, first = preds + p, refs + r, first + len(labels)
    loss = sum(float(b[0]) for b in batches) / len(batches)
    got = mmlu.summarize(subjects, preds, refs, loss, "test")
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(float(v), rel=1e-12, abs=0), k
    # not a trivial case: some right and some wrong answers in every subject
    assert 0 < got["mmlu_test_accuracy"] < 1
    assert mmlu.summarize(subjects, preds, refs, loss, "val").keys() == \
        mmlu.summarize(subjects, preds, refs, loss, "eval").keys()


def test_prediction_reads_the_last_source_position():
    """Only the logits one position before the answer count, and only the four letters."""
    abcd = [5, 6, 7, 8]
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, 7, 2, IGNORE]])
    logits = torch.zeros(1, 6, 10)
    logits[0, 2, 6] = 1.0          # position 2 predicts token 3: B
    logits[0, 2, 9] = 5.0          # not a letter: ignored
    logits[0, 3, 8] = 9.0          # the answer's own position: ignored
    assert mmlu.score_batch(logits, labels, abcd) == ([1], [2])


@pytest.mark.parametrize("labels,match", [
    ([IGNORE, IGNORE, 5, 6, 2], "row 4: 3 labelled tokens"),
    ([IGNORE, IGNORE, 9, 2, IGNORE], "row 4: answer token 9 is none of the letter tokens"),
    ([5, 2, IGNORE, IGNORE, IGNORE], "row 4: the source is empty"),
])
def test_targets_that_are_not_letter_and_eos_are_errors(labels, match):
    with pytest.raises(ValueError, match=match):
        mmlu.score_batch(torch.zeros(1, 5, 10), torch.tensor([labels]), [5, 6, 7, 8], 3)


def test_files_and_bad_rows(tmp_path):
    assert mmlu.mmlu_path("d", "mmlu-zs", "val") == "d/zero_shot_mmlu_val.json"
    assert mmlu.mmlu_path("d", "mmlu", "test") == "d/five_shot_mmlu_test.json"
    assert mmlu.mmlu_path("d", "mmlu-fs", "eval") == "d/five_shot_mmlu_val.json"
    with pytest.raises(ValueError, match="--mmlu_split 'dev'"):
        mmlu.mmlu_path("d", "mmlu-zs", "dev")
    good = {"subject": "law", "input": "Q?\nA. a\nB. b\nC. c\nD. d\nAnswer:", "output": "B"}
    path = tmp_path / "m.json"
    for bad, match in [({**good, "output": "E"}, r"m.json:2: output 'E' is not one of"),
                       ({"input": "x", "output": "A"}, r"m.json:2: field\(s\) \['subject'\]"),
                       ("text", r"m.json:2: not an object")]:
        path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(ValueError, match=match):
            mmlu.read_mmlu(str(path))
    path.write_text(json.dumps(good) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"m.json:2: neither a JSON document nor JSON lines"):
        mmlu.read_mmlu(str(path))
    path.write_text(json.dumps([good, good, good]))          # one JSON list reads too
    assert mmlu.read_mmlu(str(path), max_samples=2) == [good, good]
    with pytest.raises(FileNotFoundError, match="no such MMLU file"):
        mmlu.read_mmlu(str(tmp_path / "none.json"))


def test_the_shared_zero_shot_file(shared_data):
    rows = mmlu.read_mmlu(str(shared_data / "mmlu" / "zero_shot_mmlu_val.json"))
    assert len(rows) == 1531 and len({r["subject"] for r in rows}) == 57
    assert all(r["input"].endswith("Answer:") for r in rows)
    first = mmlu.read_mmlu(str(shared_data / "mmlu" / "zero_shot_mmlu_val.json"), 3)
    assert first == rows[:3]


def test_help_answers_without_torch():
    r = subprocess.run([sys.executable, "-X", "importtime", "eval_mmlu.py", "--help"],
                       cwd=ROOT / "NLG" / "MetaMathQA", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "--mmlu_dataset" in r.stdout and "--adapter" in r.stdout
    names = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    heavy = sorted(n for n in names if n.split(".")[0] in ("torch", "transformers", "numpy"))
    assert heavy == [], heavy[:5]


# ---------------------------------------------------------------- a tiny LLaMA, end to end

@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    """A random 2-layer LLaMA with the GPT-2 tokenizer (no pad token: eval_mmlu adds [PAD]),
    and 7 short rows of three subjects of QLoRA's zero-shot MMLU validation file."""
    d = tmp_path_factory.mktemp("mmlu")
    vocab = shared_data / "vocab"
    tok = transformers.GPT2TokenizerFast(vocab=str(vocab / "encoder.json"),
                                         merges=str(vocab / "vocab.bpe"))
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   vocab_size=len(tok), max_position_embeddings=512,
                                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    rows = mmlu.read_mmlu(str(shared_data / "mmlu" / "zero_shot_mmlu_val.json"))
    picked = []
    for subject in ("astronomy", "marketing", "virology"):
        short = sorted((r for r in rows if r["subject"] == subject), key=lambda r: len(r["input"]))
        picked += short[:3 if subject != "virology" else 1]
    (d / "data").mkdir()
    (d / "data" / "zero_shot_mmlu_val.json").write_text(
        "".join(json.dumps(r) + "\n" for r in picked))
    return d, picked


def load_tiny(d):
    args = eval_mmlu.build_parser().parse_args(["--model_name_or_path", str(d / "model"),
                                                "--dtype", "float32", "--device", "cpu"])
    return eval_mmlu.load(args)


def test_tiny_llama_end_to_end(tiny):
    d, rows = tiny
    tok, model = load_tiny(d)
    assert tok.pad_token == "[PAD]" and model.get_input_embeddings().weight.shape[0] == len(tok)
    emb = model.get_input_embeddings().weight
    assert torch.allclose(emb[-1], emb[:-1].mean(0), atol=1e-6)       # qlora.py's mean init
    one = mmlu.evaluate(model, tok, rows, split="val", batch_size=1)
    four = mmlu.evaluate(model, tok, rows, split="val", batch_size=4)
    # the same answers whatever the batching (right padding, causal attention)
    assert one["predictions"] == four["predictions"]
    # each row on its own: arg-max over the letters after BOS + input, and the loss of its two
    # target tokens (letter, EOS); mmlu_loss with one row per batch is their mean
    abcd = [tok(x, add_special_tokens=False).input_ids[0] for x in "ABCD"]
    preds, losses = [], []
    for r in rows:
        src = tok(tok.bos_token + r["input"], add_special_tokens=False).input_ids
        tgt = tok(r["output"] + tok.eos_token, add_special_tokens=False).input_ids
        assert len(tgt) == 2
        with torch.no_grad():
            logits = model(torch.tensor([src + tgt])).logits[0]
        preds.append(int(logits[len(src) - 1, abcd].argmax()))
        losses.append(float(torch.nn.functional.cross_entropy(
            logits[len(src) - 1:len(src) + 1], torch.tensor(tgt))))
    assert one["predictions"] == preds
    res = one["results"]
    assert res["mmlu_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    refs = ["ABCD".index(r["output"]) for r in rows]
    per = {}
    for r, p, t in zip(rows, preds, refs):
        per.setdefault(r["subject"], []).append(p == t)
    for s, hits in per.items():
        assert res[f"mmlu_eval_accuracy_{s}"] == sum(hits) / len(hits)
    assert res["mmlu_eval_accuracy"] == pytest.approx(
        sum(sum(h) / len(h) for h in per.values()) / len(per), rel=1e-12)
    assert one["truncated_sources"] == 0


def test_eval_mmlu_command_writes_results(tiny, tmp_path):
    d, rows = tiny
    out = tmp_path / "results.json"
    results = eval_mmlu.main(["--model_name_or_path", str(d / "model"), "--mmlu_dataset",
                              "mmlu-zs", "--mmlu_split", "val", "--data_dir", str(d / "data"),
                              "--batch_size", "3", "--max_mmlu_samples", "5", "--dtype",
                              "float32", "--device", "cpu", "--output", str(out),
                              "--mmlu_source_max_len", "40"])
    report = json.loads(out.read_text())
    assert report["results"] == results and report["rows"] == 5
    tok, model = load_tiny(d)
    want = mmlu.evaluate(model, tok, rows[:5], split="eval", batch_size=3, source_max_len=40)
    assert report["results"] == pytest.approx(want["results"], rel=1e-6)
    assert [p["predicted"] for p in report["predictions"]] == \
        ["ABCD"[i] for i in want["predictions"]]
    n_long = sum(len(tok(tok.bos_token + r["input"]).input_ids) > 40 for r in rows[:5])
    assert report["truncated_sources"] == want["truncated_sources"] == n_long > 0
    # the fields nlg.report reads (its MMLU results format)
    hits = [p["predicted"] == p["answer"] for p in report["predictions"]]
    assert (report["task"], report["split"], report["shots"]) == ("mmlu", "eval", 0)
    assert report["accuracy"] == results["mmlu_eval_accuracy"]
    assert report["correct"] == sum(hits) and report["total"] == 5
    assert report["accuracy_questions"] == sum(hits) / 5
    for subject, s in report["subjects"].items():
        mine = [h for h, r in zip(hits, rows[:5]) if r["subject"] == subject]
        assert (s["correct"], s["total"]) == (sum(mine), len(mine))
        assert s["accuracy"] == results[f"mmlu_eval_accuracy_{subject}"]
    with pytest.raises(SystemExit, match="--output is needed"):
        eval_mmlu.main(["--model_name_or_path", "some/hub-model", "--data_dir", str(d / "data"),
                        "--mmlu_dataset", "mmlu-zs"])
