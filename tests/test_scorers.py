"""Built-in scorers against the official scorers' numbers on ../shared/fixtures/metrics.

METEOR (Java) lives in test_scorers_meteor.py; tokenizers in test_scorers_tokenize.py; input
handling and the command lines in test_scorers_inputs.py.
"""
import json

import pytest

from metrics.gen import score_gen
from metrics.readers import load_e2e, load_multi_ref
from metrics.e2e import score_e2e


@pytest.fixture(scope="module")
def e2e_fixture(shared_fixtures):
    d = shared_fixtures / "metrics" / "e2e_valid"
    refs, hyps = load_e2e(d / "refs.txt", d / "hyps.txt")
    return refs, hyps, json.loads((d / "official_scores.json").read_text())


@pytest.fixture(scope="module")
def webnlg_fixture(shared_fixtures):
    d = shared_fixtures / "metrics" / "webnlg_dev"
    refs, hyps = load_multi_ref(d / "reference", d / "hypothesis", 6)
    return refs, hyps, json.loads((d / "official_scores.json").read_text())


@pytest.fixture(scope="module")
def e2e_scores(e2e_fixture):
    refs, hyps, _ = e2e_fixture
    scores, notes = score_e2e(refs, hyps, meteor=False)
    return scores, notes


def test_e2e_fixture_shape(e2e_fixture, shared_fixtures):
    refs, hyps, _ = e2e_fixture
    lines = (shared_fixtures / "metrics" / "e2e_valid" / "refs.txt").read_text().split("\n")
    assert len(refs) == len(hyps) == 547
    assert sum(map(len, refs)) == sum(1 for ln in lines if ln.strip())


@pytest.mark.parametrize("name", ["BLEU", "NIST", "ROUGE_L", "CIDEr"])
def test_e2e_matches_official(e2e_scores, e2e_fixture, name):
    official = e2e_fixture[2]
    assert e2e_scores[0][name] == pytest.approx(official[name], abs=1e-4)


def test_e2e_meteor_skipped_says_why(e2e_scores):
    scores, notes = e2e_scores
    assert scores["METEOR"] is None and "METEOR" in notes


@pytest.fixture(scope="module")
def webnlg_scores(webnlg_fixture):
    refs, hyps, _ = webnlg_fixture
    return score_gen(refs, hyps, 6, ["bleu", "ter", "chrf++"])[0]


def test_webnlg_bleu_matches_perl_print(webnlg_scores, webnlg_fixture):
    # multi-bleu-detok.perl prints BLEU with 2 decimals
    assert round(webnlg_scores["BLEU"], 2) == pytest.approx(webnlg_fixture[2]["BLEU"], abs=1e-9)


@pytest.mark.parametrize("name", ["TER", "chrF++"])
def test_webnlg_matches_official(webnlg_scores, webnlg_fixture, name):
    assert webnlg_scores[name] == pytest.approx(webnlg_fixture[2][name], abs=1e-4)


def test_ter_against_pyter():
    pyter = pytest.importorskip("pyter", reason="pyter3 (GenerationEval's TER) not installed")
    import random
    from metrics.ter import ter_many
    rng = random.Random(0)
    vocab = "a b c d e f".split()  # few words: many equal shifts, so pyter's tie rule matters
    cases = [([rng.choice(vocab) for _ in range(rng.randint(0, 12))],
              [rng.choice(vocab) for _ in range(rng.randint(1, 70 if i % 40 == 0 else 12))])
             for i in range(600)]
    ours = ter_many(cases)
    for (h, r), got in zip(cases, ours):
        assert got == pytest.approx(pyter.ter(h, r), abs=1e-12), (h, r)


def test_edit_distance_batches_agree():
    """Myers' bit-parallel distances equal the plain DP (and a hand-written Levenshtein)."""
    import numpy as np
    from metrics.ter import _distances_bits, _distances_dp

    def lev(a, b):
        prev = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            cur = [i]
            for j, y in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
            prev = cur
        return prev[-1]

    rng = np.random.default_rng(0)
    for m in (1, 5, 31, 62):
        ref = rng.integers(0, 6, m)
        hyps = rng.integers(0, 8, (20, 17))
        peq = np.zeros(8, dtype=np.uint64)
        for pos, w in enumerate(ref.tolist()):
            peq[w] |= np.uint64(1 << pos)
        c = len(hyps)
        bits = _distances_bits(hyps, np.full(c, 17), np.tile(peq, (c, 1)),
                               np.full(c, (1 << m) - 1, dtype=np.uint64),
                               np.full(c, m - 1, dtype=np.uint64))
        dp = _distances_dp(hyps, ref)
        assert bits.tolist() == dp.tolist() == [lev(h.tolist(), ref.tolist()) for h in hyps]


def test_rouge_cider_against_pycocoevalcap(e2e_fixture):
    """Our ROUGE-L and CIDEr equal the COCO caption code's on the same tokenized text."""
    rouge_mod = pytest.importorskip("pycocoevalcap.rouge.rouge")
    cider_mod = pytest.importorskip("pycocoevalcap.cider.cider")
    from metrics.cider import cider
    from metrics.ptb import coco_tokenize
    from metrics.rouge import rouge_l
    refs, hyps, _ = e2e_fixture
    refs_t = [[coco_tokenize(r) for r in rs] for rs in refs[:200]]
    hyps_t = [coco_tokenize(h) for h in hyps[:200]]
    gts = {i: r for i, r in enumerate(refs_t)}
    res = {i: [h] for i, h in enumerate(hyps_t)}
    assert rouge_l(refs_t, hyps_t) == pytest.approx(rouge_mod.Rouge().compute_score(gts, res)[0], abs=1e-12)
    assert cider(refs_t, hyps_t) == pytest.approx(cider_mod.Cider().compute_score(gts, res)[0], abs=1e-12)


def test_chrf_identical_hypothesis_is_one():
    from metrics.chrf import chrf_pp
    refs = [["the cat sat on the mat .", "a cat was on a mat"], ["dogs bark loudly"]]
    hyps = ["the cat sat on the mat .", "dogs bark loudly"]
    assert chrf_pp(refs, hyps) == pytest.approx(1.0, abs=1e-12)


def test_bleu_formulas_on_a_tiny_corpus():
    """multi-bleu-detok: hand-computed precisions and brevity penalty."""
    import math
    from metrics.bleu import multi_bleu_detok
    # hyp: 5 tokens; ref: 6 tokens; matches 1g 5/5, 2g 3/4, 3g 1/3, 4g 0/2 -> log(0) floor
    got = multi_bleu_detok([["a b c d e f"]], ["a b c e d"])
    logs = [math.log(5 / 5), math.log(3 / 4), math.log(1 / 3), -9999999999.0]
    assert got == pytest.approx(100 * math.exp(1 - 6 / 5) * math.exp(sum(logs) / 4))
    got = multi_bleu_detok([["a b c d"]], ["a b c d"])
    assert got == pytest.approx(100.0)


def test_score_step_no_meteor_uses_builtin_and_skips_meteor(tmp_path, shared_fixtures, capsys):
    """--no-meteor: no Java start-up; METEOR reported as skipped, the other scores as usual."""
    import json as _json
    import score as score_step
    d = shared_fixtures / "metrics" / "e2e_valid"
    out = tmp_path / "s.json"
    assert score_step.main(["--task", "e2e", "--ref", str(d / "refs.txt"), "--hyp", str(d / "hyps.txt"),
                            "--no-meteor", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "scorer: built-in" in printed and "METEOR: unavailable (--no-meteor given)" in printed
    got = _json.loads(out.read_text())
    official = _json.loads((d / "official_scores.json").read_text())
    assert got["METEOR"] is None and got["scorer"] == "builtin"
    for k in ("BLEU", "NIST", "ROUGE_L", "CIDEr"):
        assert abs(got[k] - official[k]) < 1e-4
