"""Input handling of the built-in scorers and their command lines: final newlines, count
mismatches, empty and non-UTF-8 files, the CSV/TSV format, --json, and the score step."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metrics.e2e import score_e2e
from metrics.gen import score_gen
from metrics.readers import ScoreInputError, load_e2e, load_multi_ref

REFS = "the cat sat on the mat .\na cat sat on a mat .\n\ndogs bark .\nthe dogs are barking .\n"
HYPS = "the cat sat on a mat .\ndogs bark loudly ."


def _write(path, text):
    Path(path).write_text(text, encoding="utf-8")
    return Path(path)


def _no_java_env():
    """Environment whose PATH has no java (so METEOR is reported, not run: fast)."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable)
    if shutil.which("java", path=env["PATH"]):
        pytest.skip("java sits beside python; cannot hide it")
    return env


def _run(repo_root, script, *args, env=None):
    return subprocess.run([sys.executable, str(repo_root / "NLG" / "eval" / script), *args],
                          capture_output=True, text=True, env=env)


def test_final_newline_is_not_a_segment(tmp_path):
    r = _write(tmp_path / "refs.txt", REFS)
    a = _write(tmp_path / "a.txt", HYPS)
    b = _write(tmp_path / "b.txt", HYPS + "\n")
    ra, ha = load_e2e(r, a)
    rb, hb = load_e2e(r, b)
    assert ha == hb and len(ha) == 2
    assert score_e2e(ra, ha, meteor=False) == score_e2e(rb, hb, meteor=False)
    for i, text in enumerate(["x y .\ndogs bark .\n", "a b .\nc d .\n"]):
        _write(tmp_path / f"reference{i}", text)
    _write(tmp_path / "hyp_nl", "x y .\nc d .\n")
    _write(tmp_path / "hyp", "x y .\nc d .")
    s1 = score_gen(*load_multi_ref(tmp_path / "reference", tmp_path / "hyp_nl", 2), 2,
                   ["bleu", "ter", "chrf++"])
    s2 = score_gen(*load_multi_ref(tmp_path / "reference", tmp_path / "hyp", 2), 2,
                   ["bleu", "ter", "chrf++"])
    assert s1 == s2
    assert s1[0]["TER"] == 0.0  # each hypothesis equals one of its references


def test_count_mismatch_names_the_files(tmp_path):
    r = _write(tmp_path / "refs.txt", REFS)
    h = _write(tmp_path / "three.txt", HYPS + "\nextra line\n")
    with pytest.raises(ScoreInputError, match=r"three\.txt: 3 predictions but .*refs\.txt has 2"):
        load_e2e(r, h)
    _write(tmp_path / "reference0", "a\nb\n")
    _write(tmp_path / "reference1", "a\n")
    _write(tmp_path / "hyp", "a\nb\n")
    with pytest.raises(ScoreInputError, match=r"reference1: 1 lines but .*hyp has 2"):
        load_multi_ref(tmp_path / "reference", tmp_path / "hyp", 2)


def test_empty_and_missing_files(tmp_path):
    r = _write(tmp_path / "refs.txt", REFS)
    e = _write(tmp_path / "empty.txt", "")
    with pytest.raises(ScoreInputError, match=r"empty\.txt: file is empty"):
        load_e2e(r, e)
    with pytest.raises(ScoreInputError, match=r"nope\.txt: no such file"):
        load_e2e(r, tmp_path / "nope.txt")
    _write(tmp_path / "blank.txt", "\n\n")
    with pytest.raises(ScoreInputError, match=r"blank\.txt: no references"):
        load_e2e(tmp_path / "blank.txt", _write(tmp_path / "h.txt", HYPS))


def test_non_utf8_names_file_and_line(tmp_path):
    r = _write(tmp_path / "refs.txt", REFS)
    h = tmp_path / "latin1.txt"
    h.write_bytes("ok line\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ScoreInputError, match=r"latin1\.txt: line 2: not valid UTF-8"):
        load_e2e(r, h)


def test_single_reference_file_and_tsv(tmp_path):
    single = _write(tmp_path / "single.txt", "the cat sat .\ndogs bark .\n")
    hyps = _write(tmp_path / "h.txt", "the cat sat .\ndogs bark .\n")
    refs, _ = load_e2e(single, hyps)
    assert refs == [["the cat sat ."], ["dogs bark ."]]
    tsv = _write(tmp_path / "refs.tsv", "mr\tref\nA\tthe cat sat .\nA\ta cat sat .\nB\tdogs bark .\n")
    refs, hy = load_e2e(tsv, hyps)
    assert refs == [["the cat sat .", "a cat sat ."], ["dogs bark ."]]
    sys_csv = _write(tmp_path / "out.csv", "mr,output\nB,dogs bark .\nA,the cat sat .\n")
    refs, hy = load_e2e(tsv, sys_csv)  # regrouped by the system file's sources
    assert hy == ["dogs bark .", "the cat sat ."] and refs[0] == ["dogs bark ."]


def test_score_e2e_cli_lines_and_json(repo_root, tmp_path):
    env = _no_java_env()
    r = _write(tmp_path / "refs.txt", REFS)
    h = _write(tmp_path / "h.txt", HYPS)
    out = _run(repo_root, "score_e2e.py", str(r), str(h), "-p", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["SCORES:", "=============="]
    assert [ln.split(":")[0] for ln in lines[2:7]] == ["BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"]
    assert lines[4].startswith("METEOR: unavailable (") and "java" in lines[4]
    js = json.loads(_run(repo_root, "score_e2e.py", str(r), str(h), "--json", env=env).stdout)
    refs, hyps = load_e2e(r, h)
    expect, _ = score_e2e(refs, hyps, meteor=False)
    for k in ("BLEU", "NIST", "ROUGE_L", "CIDEr"):
        assert js[k] == expect[k]
        assert f"{k}: {expect[k]:.4f}" in lines
    assert js["METEOR"] is None and "java" in js["unavailable"]["METEOR"]


def test_score_e2e_cli_error_exit(repo_root, tmp_path):
    r = _write(tmp_path / "refs.txt", REFS)
    out = _run(repo_root, "score_e2e.py", str(r), str(tmp_path / "missing.txt"))
    assert out.returncode == 2 and "missing.txt: no such file" in out.stderr


def test_score_gen_cli(repo_root, tmp_path):
    for i, text in enumerate(["the cat sat .\ndogs bark .\n", "a cat sat .\nthe dogs bark .\n"]):
        _write(tmp_path / f"ref{i}", text)
    h = _write(tmp_path / "hyp", "the cat sat .\ndogs bark loudly .\n")
    args = ["-R", str(tmp_path / "ref"), "-H", str(h), "-nr", "2", "-m", "bleu,ter,chrf++"]
    out = _run(repo_root, "score_gen.py", *args)
    assert out.returncode == 0, out.stderr
    assert [ln.split(":")[0] for ln in out.stdout.splitlines()] == ["BLEU", "TER", "chrF++"]
    js = json.loads(_run(repo_root, "score_gen.py", *args, "--json").stdout)
    expect, _ = score_gen(*load_multi_ref(tmp_path / "ref", h, 2), 2, ["bleu", "ter", "chrf++"])
    assert js == expect
    bad = _run(repo_root, "score_gen.py", *args[:-1], "bleu,rouge")
    assert bad.returncode == 2 and "rouge" in bad.stderr


def test_score_step_builtin_and_official_choice(repo_root, tmp_path):
    env = _no_java_env()
    r = _write(tmp_path / "refs.txt", REFS)
    h = _write(tmp_path / "h.txt", HYPS)
    js = tmp_path / "out" / "scores.json"
    out = _run(repo_root, "score.py", "--task", "e2e", "--ref", str(r), "--hyp", str(h),
               "--json", str(js), "--official", "no", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("scorer: built-in")
    saved = json.loads(js.read_text())
    assert saved["scorer"] == "builtin" and saved["METEOR"] is None
    assert f"BLEU: {saved['BLEU']:.4f}" in out.stdout
    official = repo_root / "NLG" / "eval" / "e2e" / "measure_scores.py"
    if not official.exists():
        out = _run(repo_root, "score.py", "--task", "e2e", "--ref", str(r), "--hyp", str(h),
                   "--official", "yes", env=env)
        assert out.returncode == 1 and "not installed" in out.stderr
        out = _run(repo_root, "score.py", "--task", "e2e", "--ref", str(r), "--hyp", str(h),
                   env=env)
        assert out.returncode == 0 and "scorer: built-in" in out.stdout
        assert "not installed" in out.stderr
    out = _run(repo_root, "score.py", "--task", "webnlg", "--ref", str(r), "--hyp", str(h))
    assert out.returncode == 2  # --nr missing


def test_score_step_uses_an_installed_official_scorer(repo_root, tmp_path):
    """A stand-in measure_scores.py / eval.py in a copy of NLG/eval: the step runs them,
    parses their output and says so."""
    ev = tmp_path / "eval"
    shutil.copytree(repo_root / "NLG" / "eval", ev,
                    ignore=shutil.ignore_patterns("e2e", "GenerationEval", "__pycache__"))
    (ev / "e2e").mkdir()
    _write(ev / "e2e" / "measure_scores.py",
           "import sys\nassert sys.argv[1] == '-p'\nprint('SCORES:\\n==============')\n"
           "for k, v in [('BLEU', .5), ('NIST', 7.25), ('METEOR', .375), ('ROUGE_L', .625),"
           " ('CIDEr', 1.5)]: print('%s: %.4f' % (k, v))\n")
    (ev / "GenerationEval").mkdir()
    _write(ev / "GenerationEval" / "eval.py",
           "import sys\nref = sys.argv[sys.argv.index('-R') + 1]\n"
           "assert not open(ref + '0').read().endswith('\\n')\n"
           "print('STARTING TO PARSE INPUTS...')\n"
           "print('  BLEU    BLEU NLTK    METEOR    chrF++    TER')\n"
           "print('------  -----------  --------  --------  -----')\n"
           "print(' 35.16         0.35      0.36       0.6   0.53')\n")
    r = _write(tmp_path / "refs.txt", REFS)
    h = _write(tmp_path / "h.txt", HYPS)
    js = tmp_path / "s.json"
    out = subprocess.run([sys.executable, str(ev / "score.py"), "--task", "e2e", "--ref", str(r),
                          "--hyp", str(h), "--json", str(js)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"scorer: official ({ev / 'e2e' / 'measure_scores.py'})"
    assert json.loads(js.read_text()) == {"BLEU": .5, "NIST": 7.25, "METEOR": .375,
                                          "ROUGE_L": .625, "CIDEr": 1.5, "scorer": "official",
                                          "task": "e2e"}
    for i in range(2):
        _write(tmp_path / f"reference{i}", "a b .\nc d .\n")
    out = subprocess.run([sys.executable, str(ev / "score.py"), "--task", "dart", "--ref",
                          str(tmp_path / "reference"), "--hyp", str(h), "--nr", "2", "--json",
                          str(js)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(js.read_text()) == {"BLEU": 35.16, "METEOR": .36, "chrF++": .6,
                                          "TER": .53, "scorer": "official", "task": "dart"}


def test_download_script_syntax_and_clear_failure(repo_root, tmp_path):
    script = repo_root / "NLG" / "eval" / "download_evalscript.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    copy = tmp_path / "eval" / "download_evalscript.sh"
    copy.parent.mkdir()
    shutil.copy(script, copy)
    env = dict(os.environ, E2E_METRICS_URL=str(tmp_path / "no-such-repo"), PYTHON=sys.executable)
    out = subprocess.run(["bash", str(copy)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1
    assert "could not clone" in out.stderr and "built-in scorers" in out.stderr
    assert not (copy.parent / "e2e").exists()


def test_empty_hypotheses_score_zero_instead_of_crashing(tmp_path):
    """multi-bleu-detok.perl dies dividing by zero when every hypothesis is empty."""
    _write(tmp_path / "reference", "a b c .\nd e .\n")
    _write(tmp_path / "hyp", "\n\n")
    scores, _ = score_gen(*load_multi_ref(tmp_path / "reference", tmp_path / "hyp", 1), 1,
                          ["bleu", "ter", "chrf++"])
    assert scores["BLEU"] == 0.0 and scores["TER"] == 1.0


def test_download_script_patches_generationeval(repo_root, tmp_path):
    """The eval.py patch: the argv reset goes, the optional imports stop being fatal, and
    argparse then sees the command line."""
    fake = tmp_path / "eval.py"
    fake.write_text(
        "import argparse\n"
        "from bert_score import score\n"
        "from metrics.bleurt.bleurt import score as bleurt_score\n"
        "sys.argv = sys.argv[:1]\n"
        "from razdel import tokenize\n"
        "if __name__ == '__main__':\n"
        "    ap = argparse.ArgumentParser()\n"
        "    ap.add_argument('-R', required=True)\n"
        "    print('R=' + ap.parse_args().R)\n")
    script = repo_root / "NLG" / "eval" / "download_evalscript.sh"
    env = dict(os.environ, PYTHON=sys.executable)
    out = subprocess.run(["bash", str(script), "--patch-only", str(fake)], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr
    text = fake.read_text()
    assert "sys.argv = sys.argv[:1]" not in text and text.startswith("import sys\n")
    run = subprocess.run([sys.executable, str(fake), "-R", "refs"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "R=refs"
