"""Corpus NIST as e2e-metrics' pymteval NISTScore computes it (mteval-v13a tokens,
case-insensitive, information weights from all references of the corpus)."""
import math
from collections import Counter

from .bleu import max_ref_counts, mteval_tokens, ngram_counts

# mteval-v13a's length-penalty constant: the penalty is 0.5 when the output is 2/3 as long
BETA = -math.log(0.5) / math.log(1.5) ** 2


def nist(refs_per_seg, hyps, max_n=5):
    ref_counts = [Counter() for _ in range(max_n + 1)]  # [0] holds the 0-gram (word total)
    hits = [[] for _ in range(max_n)]
    cand = [0] * max_n
    avg_ref_len = 0.0
    for refs, hyp in zip(refs_per_seg, hyps):
        h = mteval_tokens(hyp, lowercase=True)
        rs = [mteval_tokens(r, lowercase=True) for r in refs]
        for n in range(1, max_n + 1):
            cand[n - 1] += len(h) - (n - 1)
            bound = max_ref_counts(rs, n)
            seg_hits = {}
            for g, c in ngram_counts(h, n).items():
                k = min(c, bound[g])
                if k:
                    seg_hits[g] = k
            hits[n - 1].append(seg_hits)
            for r in rs:
                ref_counts[n].update(ngram_counts(r, n))
        total = sum(len(r) for r in rs)
        ref_counts[0][()] += total
        avg_ref_len += total / float(len(rs))

    def info(g):
        c = ref_counts[len(g)].get(g)
        if not c:
            return 0.0
        return math.log(ref_counts[len(g) - 1][g[:-1]] / float(c), 2)

    score = 0.0
    for n in range(max_n):
        hit_info = 0.0
        for seg_hits in hits[n]:
            hit_info += sum(info(g) * k for g, k in seg_hits.items())
        score += hit_info / (cand[n] if cand[n] else 1)
    ratio = cand[0] / float(avg_ref_len) if avg_ref_len else 0.0
    if ratio >= 1:
        bp = 1.0
    elif ratio <= 0:
        bp = 0.0
    else:
        bp = math.exp(-BETA * math.log(ratio) ** 2)
    return bp * score
