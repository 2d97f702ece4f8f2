"""METEOR through the official METEOR 1.5 jar, one run per fixture (the jar loads its
paraphrase table each time, ~10 s), and the report when Java is missing."""
import json
import shutil

import pytest

from metrics.meteor import MeteorUnavailable, find_meteor_jar


def _need_meteor():
    if shutil.which("java") is None:
        pytest.skip("java not installed: METEOR 1.5 is a Java program")
    try:
        find_meteor_jar()
    except MeteorUnavailable as e:
        pytest.skip(str(e))


def test_e2e_meteor_matches_official(shared_fixtures):
    _need_meteor()
    from metrics.meteor import meteor_coco
    from metrics.ptb import coco_tokenize
    from metrics.readers import load_e2e
    d = shared_fixtures / "metrics" / "e2e_valid"
    refs, hyps = load_e2e(d / "refs.txt", d / "hyps.txt")
    official = json.loads((d / "official_scores.json").read_text())
    got = meteor_coco([[coco_tokenize(r) for r in rs] for rs in refs],
                      [coco_tokenize(h) for h in hyps])
    assert got == pytest.approx(official["METEOR"], abs=1e-4)


def test_webnlg_meteor_matches_official(shared_fixtures):
    _need_meteor()
    from metrics.gen import score_gen
    from metrics.readers import load_multi_ref
    d = shared_fixtures / "metrics" / "webnlg_dev"
    refs, hyps = load_multi_ref(d / "reference", d / "hypothesis", 6)
    official = json.loads((d / "official_scores.json").read_text())
    scores, notes = score_gen(refs, hyps, 6, ["meteor"])
    assert notes == {}
    assert scores["METEOR"] == pytest.approx(official["METEOR"], abs=1e-4)


def test_without_java_meteor_is_unavailable_and_the_rest_prints(monkeypatch, tmp_path):
    """No java on PATH: METEOR is reported unavailable with the reason; others still score."""
    import metrics.meteor as meteor
    from metrics.e2e import score_e2e
    monkeypatch.setattr(meteor.shutil, "which", lambda name: None)
    refs = [["the cat sat on the mat .", "a cat sat on a mat ."], ["dogs bark ."]]
    hyps = ["the cat sat on a mat .", "dogs bark loudly ."]
    scores, notes = score_e2e(refs, hyps)
    assert scores["METEOR"] is None
    assert "java" in notes["METEOR"]
    assert all(isinstance(scores[k], float) for k in ("BLEU", "NIST", "ROUGE_L", "CIDEr"))


def test_missing_jar_is_a_clear_reason(monkeypatch, tmp_path):
    import metrics.meteor as meteor
    monkeypatch.setenv("METEOR_JAR", str(tmp_path / "nowhere.jar"))
    monkeypatch.setattr(meteor.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MeteorUnavailable, match="nowhere.jar"):
        meteor.find_meteor_jar()
