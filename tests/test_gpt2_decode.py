"""gpt2_decode.py: reference/prediction files in the LoRA layout, from beam-search sample files
with one {"id": line_index, "predict": ids} per line of the test jsonl."""
import json
import subprocess
import sys

import pytest

from nlg import encoder
from nlg import format_converting_e2e
from nlg import format_converting_webnlg
from nlg import gpt2_decode

@pytest.fixture(scope="module")
def vocab(shared_data):
    return shared_data / "vocab"


@pytest.fixture(scope="module")
def enc(vocab):
    return encoder.get_encoder(str(vocab))


def read_jsonl(path):
    return [json.loads(ln) for ln in open(path, encoding="utf8")]


def grouped(records):
    """{context: [completions]} in first-seen order (the grouping the reference uses)."""
    out = {}
    for x in records:
        out.setdefault(x["context"], []).append(x["completion"])
    return out


def write_beam_samples(path, records, enc, text_for_context, tail=" trailing junk"):
    """One line per input line, like gpt2_beam.py: the context's prediction, then eot and junk."""
    with open(path, "w", encoding="utf8") as f:
        for i, x in enumerate(records):
            ids = enc.encode(" " + text_for_context[x["context"]]) + [enc.eos_id] + enc.encode(tail)
            f.write(json.dumps({"id": i, "predict": ids}) + "\n")


def run_decode(repo_root, *args):
    return subprocess.run([sys.executable, "src/gpt2_decode.py", *map(str, args)], cwd=repo_root / "NLG",
                          capture_output=True, text=True)


def test_tokenize_lower_as_reference():
    pp = gpt2_decode.post_process
    assert pp("Aarhus Airport's runway length is 2702.0.", True, True) == "aarhus airport ' s runway length is 2702 . 0 ."  # noqa: E501 (exact data)
    assert pp("Adolfo Suárez Madrid–Barajas  Airport\t(MAD)", True, False) == "Adolfo Suárez Madrid – Barajas Airport ( MAD )"  # noqa: E501 (exact data)
    assert pp("Snake_case stays, ÉCOLE", False, True) == "snake_case stays, école"
    assert pp("  keep  spacing ", False, False) == "  keep  spacing "


def test_cut_at_eot_then_blank_line():
    assert gpt2_decode.cut(" A b.\n\nnext<|endoftext|>x") == "A b."
    # one line per prediction: a single line break inside becomes a space (it split the
    # prediction over two lines of the file and shifted every later one; other spaces are kept)
    assert gpt2_decode.cut("one\ntwo <|endoftext|>\n\nthree") == "one two"
    assert gpt2_decode.cut("<|im_start|>assistant\n A  b .\r\nc<|endoftext|>") == \
        "<|im_start|>assistant A  b . c"
    assert gpt2_decode.cut("<|endoftext|>") == ""


def test_e2e_seed_command_layout(repo_root, shared_data, shared_fixtures, vocab, enc, tmp_path):
    formatted = tmp_path / "valid_formatted.jsonl"
    format_converting_e2e.convert(str(shared_data / "e2e" / "valid.txt"), str(formatted))
    records = read_jsonl(formatted)
    groups = grouped(records)
    hyps = (shared_fixtures / "metrics" / "e2e_valid" / "hyps.txt").read_text(encoding="utf8").splitlines()
    assert len(groups) == len(hyps) == 547
    text_for = dict(zip(groups, hyps))
    samples = tmp_path / "predict.jsonl"
    write_beam_samples(samples, records, enc, text_for)
    r = run_decode(repo_root, "--vocab", vocab, "--sample_file", samples, "--input_file", formatted,
                   "--output_ref_file", tmp_path / "e2e_ref.txt", "--output_pred_file", tmp_path / "e2e_pred.txt")
    assert r.returncode == 0, r.stderr
    pred = (tmp_path / "e2e_pred.txt").read_text(encoding="utf8")
    assert pred == "".join(h.strip() + "\n" for h in hyps)
    ref = (tmp_path / "e2e_ref.txt").read_text(encoding="utf8")
    assert ref == "".join("".join(c.strip() + "\n" for c in refs) + "\n" for refs in groups.values())
    # The metric fixture's refs.txt is written in this layout from the same contexts (each block
    # lacks the one reference that became the hypothesis).
    fixture_blocks = (shared_fixtures / "metrics" / "e2e_valid" / "refs.txt").read_text(encoding="utf8").split("\n\n")
    our_blocks = ref.split("\n\n")
    assert len(fixture_blocks) == len(our_blocks)
    for fb, ob in zip(fixture_blocks, our_blocks):
        assert set(fb.strip("\n").split("\n")) <= set(ob.strip("\n").split("\n"))


@pytest.fixture(scope="module")
def webnlg_dev(shared_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("webnlg")
    formatted = d / "valid_formatted.jsonl"
    format_converting_webnlg.convert(str(shared_data / "webnlg_challenge_2017" / "dev.json"), str(formatted))
    return formatted, read_jsonl(formatted)


def test_webnlg_tokenize_lower_matches_metric_fixture(repo_root, shared_fixtures, vocab, enc, webnlg_dev, tmp_path):
    formatted, records = webnlg_dev
    groups = grouped(records)
    samples = tmp_path / "predict.jsonl"
    write_beam_samples(samples, records, enc, {c: refs[-1] for c, refs in groups.items()}, tail="\n\nmore")
    refdir = tmp_path / "references_webnlg"
    r = run_decode(repo_root, "--vocab", vocab, "--sample_file", samples, "--input_file", formatted,
                   "--ref_type", "webnlg", "--ref_num", 6, "--output_ref_file", refdir,
                   "--output_pred_file", tmp_path / "hypothesis_webnlg", "--tokenize", "--lower")
    assert r.returncode == 0, r.stderr
    pp = lambda s: gpt2_decode.post_process(s, True, True)  # noqa: E731
    ours = [(refdir / f"reference{i}").read_text(encoding="utf8").splitlines() for i in range(6)]
    hyp = (tmp_path / "hypothesis_webnlg").read_text(encoding="utf8").splitlines()
    assert hyp == [pp(refs[-1]) for refs in groups.values()]
    for i in range(6):  # padded with the first reference
        assert ours[i] == [pp(refs[i] if i < len(refs) else refs[0]) for refs in groups.values()]
    # The fixture holds, for each context with two or more references, references "lowercased and
    # tokenized as gpt2_decode.py --tokenize --lower writes them": every line must be one of ours.
    fx = shared_fixtures / "metrics" / "webnlg_dev"
    theirs = [(fx / f"reference{i}").read_text(encoding="utf8").splitlines() for i in range(6)]
    multi = [j for j, refs in enumerate(groups.values()) if len(refs) >= 2]
    assert len(multi) == len(theirs[0]) == 814
    for row, j in enumerate(multi):
        mine = {pp(r) for r in list(groups.values())[j]}
        for t in theirs:
            assert t[row] in mine, (row, t[row])
    fixture_hyp = (fx / "hypothesis").read_text(encoding="utf8").splitlines()
    assert all(pp(h) == h for h in fixture_hyp)


def test_webnlg_filter_seen_unseen(repo_root, vocab, enc, tmp_path):
    cates = {"Airport": True, "Athlete": False, "Food": True, "Artist": False}
    records = [{"context": f"{c} {k}", "completion": f"{c} ref {k}", "cate": seen}
               for k in range(3) for c, seen in cates.items() for _ in range(2)]
    inp, samples = _small_case(tmp_path, enc, [], records)
    write_beam_samples(samples, records, enc, {x["context"]: "pred " + x["context"] for x in records})
    for flt in ("all", "seen", "unseen"):
        d = tmp_path / flt
        r = run_decode(repo_root, "--vocab", vocab, "--sample_file", samples, "--input_file", inp,
                       "--ref_type", "webnlg", "--ref_num", "3", "--output_ref_file", d / "refs",
                       "--output_pred_file", d / "pred", "--filter", flt)
        assert r.returncode == 0, r.stderr
        want = list(dict.fromkeys(x["context"] for x in records
                                  if flt == "all" or x["cate"] == (flt == "seen")))
        assert (d / "pred").read_text(encoding="utf8").splitlines() == ["pred " + c for c in want]
        for i in range(3):  # two references per context: the third file repeats the first
            refs = (d / "refs" / f"reference{i}").read_text(encoding="utf8").splitlines()
            assert refs == [c.split()[0] + " ref " + c.split()[1] for c in want]
        assert len(want) == {"all": 12, "seen": 6, "unseen": 6}[flt]


def test_webnlg_dev_filter_counts(vocab, enc, webnlg_dev, tmp_path):
    formatted, records = webnlg_dev
    samples = tmp_path / "predict.jsonl"
    write_beam_samples(samples, records, enc, {x["context"]: "p" for x in records})
    args = ["--vocab", str(vocab), "--sample_file", str(samples), "--input_file", str(formatted),
            "--ref_type", "webnlg", "--output_ref_file", str(tmp_path / "refs"), "--output_pred_file",
            str(tmp_path / "pred")]
    gpt2_decode.main(args + ["--filter", "seen"])
    assert len((tmp_path / "pred").read_text(encoding="utf8").splitlines()) == 870
    # the 2017 dev split holds the ten seen categories only
    assert {x["cate"] for x in records} == {True}
    # as the reference: nothing to write is not an error (run_task.sh scores all / seen / unseen)
    gpt2_decode.main(args + ["--filter", "unseen", "--ref_num", "2"])
    assert (tmp_path / "pred").read_text(encoding="utf8") == ""
    assert [(tmp_path / "refs" / f"reference{i}").read_text(encoding="utf8") for i in range(2)] == ["", ""]


def test_ref_unique_file_groups_by_id(vocab, enc, tmp_path):
    inp = tmp_path / "in.jsonl"
    rows = [("c", "r0"), ("c", "r1"), ("c", "r2"), ("d", "s0")]
    inp.write_text("".join(json.dumps({"context": c, "completion": t}) + "\n" for c, t in rows), encoding="utf8")
    uniq = tmp_path / "uniq.txt"
    uniq.write_text("7\n7\n9\n8\n", encoding="utf8")
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps({"id": i, "predict": enc.encode(f" p{i}")}) + "\n" for i in range(4)),
                       encoding="utf8")
    gpt2_decode.main(["--vocab", str(vocab), "--sample_file", str(samples), "--input_file", str(inp),
                      "--ref_unique_file", str(uniq), "--output_ref_file", str(tmp_path / "ref"),
                      "--output_pred_file", str(tmp_path / "pred")])
    assert (tmp_path / "ref").read_text(encoding="utf8") == "r0\nr1\n\nr2\n\ns0\n\n"
    assert (tmp_path / "pred").read_text(encoding="utf8") == "p1\np2\np3\n"


def _small_case(tmp_path, enc, sample_lines, records=None):
    records = records or [{"context": "a", "completion": "x", "cate": True},
                          {"context": "b", "completion": "y", "cate": False}]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf8")
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(ln + "\n" for ln in sample_lines), encoding="utf8")
    return inp, samples


def test_dart_layout_and_ref_num(vocab, enc, tmp_path):
    records = [{"context": "a", "completion": c} for c in ("a0", "a1", "a2")] + [{"context": "b", "completion": "b0"}]
    inp, samples = _small_case(tmp_path, enc, [json.dumps({"id": i, "predict": enc.encode(" P")}) for i in range(4)],
                               records)
    gpt2_decode.main(["--vocab", str(vocab), "--sample_file", str(samples), "--input_file", str(inp),
                      "--ref_type", "dart", "--ref_num", "2", "--output_ref_file", str(tmp_path / "refs"),
                      "--output_pred_file", str(tmp_path / "pred")])
    assert (tmp_path / "refs" / "reference0").read_text(encoding="utf8") == "a0\nb0\n"
    assert (tmp_path / "refs" / "reference1").read_text(encoding="utf8") == "a1\nb0\n"
    assert not (tmp_path / "refs" / "reference2").exists()
    assert (tmp_path / "pred").read_text(encoding="utf8") == "P\nP\n"


@pytest.mark.parametrize("sample_lines,extra,msg", [
    (['{"id": 0, "predict": [64]}', '{"id": 2, "predict": [64]}'], [], "id 2 is not a line index"),
    (['{"id": 0, "predict": [64]}', '{"id": -1, "predict": [64]}'], [], "id -1 is not a line index"),
    (['{"id": 0, "predict": [64]}', 'oops'], [], "s.jsonl:2: not valid JSON"),
    (['{"id": 0, "predict": [64]}', '{"predict": [64]}'], [], "s.jsonl:2: expected keys"),
    (['{"id": 0, "predict": [64]}'], [], "no prediction for 1 of 2 contexts"),
    (['{"id": 0, "predict": [64]}', '{"id": 1, "predict": [99999999]}'], [], "s.jsonl:2: bad 'predict'"),
])
def test_bad_sample_file_is_an_error(repo_root, vocab, enc, tmp_path, sample_lines, extra, msg):
    inp, samples = _small_case(tmp_path, enc, sample_lines)
    r = run_decode(repo_root, "--vocab", vocab, "--sample_file", samples, "--input_file", inp,
                   "--output_ref_file", tmp_path / "ref", "--output_pred_file", tmp_path / "pred", *extra)
    assert r.returncode != 0
    assert msg in r.stderr, r.stderr


def test_filter_needs_cate(repo_root, vocab, enc, tmp_path):
    inp, samples = _small_case(tmp_path, enc, ['{"id": 0, "predict": [64]}'],
                               [{"context": "a", "completion": "x"}])
    r = run_decode(repo_root, "--vocab", vocab, "--sample_file", samples, "--input_file", inp, "--filter", "seen",
                   "--output_ref_file", tmp_path / "ref", "--output_pred_file", tmp_path / "pred")
    assert r.returncode != 0 and f"{inp}:1: --filter seen needs a 'cate' key" in r.stderr
