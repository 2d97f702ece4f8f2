"""gpt2_encode.py: context ids (+ eot) and BPE(" " + completion) (+ eot), as the LoRA script."""
import json
import subprocess
import sys

import pytest

from nlg import encoder
from nlg import gpt2_encode

transformers = pytest.importorskip("transformers")


def run_encode(repo_root, vocab, inp, out, *flags):
    return subprocess.run([sys.executable, "src/gpt2_encode.py", "--vocab", str(vocab), "--input", str(inp),
                           "--output", str(out), *flags], cwd=repo_root / "NLG", capture_output=True, text=True)


def test_e2e_valid_against_hf_tokenizer(repo_root, shared_data, tmp_path):
    vocab = shared_data / "vocab"
    formatted = tmp_path / "valid_formatted.jsonl"
    with open(shared_data / "e2e" / "valid.txt", encoding="utf8") as f, open(formatted, "w", encoding="utf8") as w:
        for line in f:
            mr, ref = line.strip().split("||")
            w.write(json.dumps({"context": mr, "completion": ref}) + "\n")
    out = tmp_path / "valid.jsonl"
    r = run_encode(repo_root, vocab, formatted, out, "--add_bos", "--add_eos")
    assert r.returncode == 0, r.stderr
    assert "100%" in r.stderr  # tqdm bar ran to the end
    tok = transformers.GPT2Tokenizer(str(vocab / "encoder.json"), str(vocab / "vocab.bpe"))
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    assert eot == 50256
    src = [json.loads(ln) for ln in formatted.read_text(encoding="utf8").splitlines()]
    lines = out.read_text(encoding="utf8").splitlines()
    assert len(lines) == len(src) == 4672
    for s, line in zip(src, lines):
        x = json.loads(line)
        assert line == json.dumps(x) and list(x) == ["context", "completion"]
        assert x["context"] == tok.encode(s["context"]) + [eot]
        assert x["completion"] == tok.encode(" " + s["completion"]) + [eot]


def test_flags_and_empty_context(shared_data):
    enc = encoder.get_encoder(str(shared_data / "vocab"))
    items = {"context": "", "completion": "Plain text to pretrain on."}
    body = enc.encode(" Plain text to pretrain on.")
    assert gpt2_encode.encode_record(enc, items, False, False) == {"context": [], "completion": body}
    assert gpt2_encode.encode_record(enc, items, True, True) == {"context": [50256], "completion": body + [50256]}
    assert gpt2_encode.encode_record(enc, {"context": "a", "completion": "b"}, True, False) == \
        {"context": enc.encode("a") + [50256], "completion": enc.encode(" b")}


def test_small_vocabulary_uses_its_own_eot_id(repo_root, tmp_path):
    b2u = encoder.bytes_to_unicode()
    vocab = {ch: i for i, ch in enumerate(b2u.values())}
    vocab["Ġt"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # 257, not 50256
    (tmp_path / "encoder.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nĠ t\n", encoding="utf-8")
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"context": "", "completion": "tt"}) + "\n", encoding="utf8")
    r = run_encode(repo_root, tmp_path, inp, tmp_path / "out.jsonl", "--add_bos", "--add_eos")
    assert r.returncode == 0, r.stderr
    x = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf8"))
    assert x == {"context": [257], "completion": [256, vocab["t"], 257]}


@pytest.mark.parametrize("bad,msg", [
    ("{not json\n", "not valid JSON"),
    ("\n", "not valid JSON"),
    ('{"context": "x"}\n', "'completion' missing"),
    ('["context", "completion"]\n', "expected a JSON object"),
])
def test_malformed_line_names_file_and_line(repo_root, shared_data, tmp_path, bad, msg):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"context": "a", "completion": "b"}\n' + bad, encoding="utf8")
    out = tmp_path / "out.jsonl"
    r = run_encode(repo_root, shared_data / "vocab", inp, out, "--add_bos", "--add_eos")
    assert r.returncode != 0
    assert f"{inp}:2:" in r.stderr and msg in r.stderr
    assert not out.exists() and not (tmp_path / "out.jsonl.part").exists()
