"""The five E2E scores, as `measure_scores.py -p` computes them."""
from .bleu import e2e_bleu
from .cider import cider
from .meteor import MeteorUnavailable, meteor_coco
from .nist import nist
from .ptb import coco_tokenize
from .rouge import rouge_l

NAMES = ["BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"]


def score_e2e(refs_per_seg, hyps, meteor=True, step=None):
    """Returns (scores, notes): scores maps NAMES to floats (METEOR to None when it cannot
    run); notes says why something is missing. step(name), if given, follows each metric."""
    step = step or (lambda name: None)
    scores, notes = {}, {}
    scores["BLEU"] = e2e_bleu(refs_per_seg, hyps)
    step("BLEU")
    scores["NIST"] = nist(refs_per_seg, hyps)
    step("NIST")
    refs_tok = [[coco_tokenize(r) for r in refs] for refs in refs_per_seg]
    hyps_tok = [coco_tokenize(h) for h in hyps]
    scores["METEOR"] = None
    if meteor:
        try:
            scores["METEOR"] = meteor_coco(refs_tok, hyps_tok)
        except MeteorUnavailable as e:
            notes["METEOR"] = str(e)
    else:
        notes["METEOR"] = "--no-meteor given"
    step("METEOR")
    scores["ROUGE_L"] = rouge_l(refs_tok, hyps_tok)
    step("ROUGE_L")
    scores["CIDEr"] = cider(refs_tok, hyps_tok)
    step("CIDEr")
    return {k: scores[k] for k in NAMES}, notes
