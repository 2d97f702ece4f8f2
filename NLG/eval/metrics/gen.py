"""WebNLG/DART scores as GenerationEval's eval.py computes them.

BLEU: multi-bleu-detok.perl on the raw lines; METEOR and TER on NLTK-tokenized lines; chrF++
on the raw lines. Keys are the names eval.py prints.
"""
from .bleu import multi_bleu_detok
from .chrf import chrf_pp
from .meteor import MeteorUnavailable, meteor_files
from .ter import corpus_ter
from .tokenization import treebank_tokenize

METRICS = ["bleu", "meteor", "ter", "chrf++"]
NAMES = {"bleu": "BLEU", "meteor": "METEOR", "ter": "TER", "chrf++": "chrF++"}


def parse_metrics(spec):
    names = [m.strip().lower() for m in spec.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {','.join(METRICS)}")
    return names


def score_gen(refs_per_seg, hyps, num_refs, metrics=METRICS, nworder=2, ncorder=6, beta=2.0,
              step=None):
    """Returns (scores, notes) keyed by printed name; METEOR is None when it cannot run.
    step(name), if given, follows each metric."""
    scores, notes = {}, {}
    tok = None
    if any(m in metrics for m in ("meteor", "ter")):
        refs_tok = [[" ".join(treebank_tokenize(r)) for r in refs] for refs in refs_per_seg]
        hyps_tok = [" ".join(treebank_tokenize(h)) for h in hyps]
        tok = refs_tok, hyps_tok
    for m in metrics:
        if m == "bleu":
            scores["BLEU"] = multi_bleu_detok(refs_per_seg, hyps)
        elif m == "meteor":
            try:
                scores["METEOR"] = meteor_files(tok[0], tok[1], num_refs)
            except MeteorUnavailable as e:
                scores["METEOR"] = None
                notes["METEOR"] = str(e)
        elif m == "ter":
            scores["TER"] = corpus_ter([[r.split() for r in refs[:num_refs]] for refs in tok[0]],
                                       [h.split() for h in tok[1]])
        elif m == "chrf++":
            scores["chrF++"] = chrf_pp([refs[:num_refs] for refs in refs_per_seg], hyps,
                                       nworder, ncorder, beta)
        if step is not None:
            step(m)
    return scores, notes
