"""CIDEr as the COCO caption code computes it (that is CIDEr-D: tf-idf n-gram vectors up to
4-grams, idf from the references of the scored corpus, clipped matches, a Gaussian length
penalty with sigma 6, times 10). Quirk kept: the "length" it compares is the bigram count."""
import math
from collections import Counter

N = 4
SIGMA = 6.0


def _counts(tokens):
    c = Counter()
    for k in range(1, N + 1):
        for i in range(len(tokens) - k + 1):
            c[tuple(tokens[i:i + k])] += 1
    return c


def cider(refs_per_seg, hyps):
    """Inputs are tokenized strings (split on whitespace)."""
    hyp_c = [_counts(h.split()) for h in hyps]
    ref_c = [[_counts(r.split()) for r in refs] for refs in refs_per_seg]
    df = Counter()
    for refs in ref_c:
        df.update(set(g for r in refs for g in r))
    log_n = math.log(float(len(ref_c)))

    def vec(cnts):
        v = [{} for _ in range(N)]
        norm = [0.0] * N
        length = 0
        for g, tf in cnts.items():
            n = len(g) - 1
            w = float(tf) * (log_n - math.log(max(1.0, df[g])))
            v[n][g] = w
            norm[n] += w * w
            if n == 1:
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    total = 0.0
    for hc, rcs in zip(hyp_c, ref_c):
        vh, nh, lh = vec(hc)
        seg = [0.0] * N
        for rc in rcs:
            vr, nr, lr = vec(rc)
            pen = math.exp(-((lh - lr) ** 2) / (2 * SIGMA ** 2))
            for n in range(N):
                val = sum(min(w, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, w in vh[n].items())
                if nh[n] != 0 and nr[n] != 0:
                    val /= nh[n] * nr[n]
                seg[n] += val * pen
        total += sum(seg) / N / len(rcs) * 10.0
    return total / len(hyp_c)
