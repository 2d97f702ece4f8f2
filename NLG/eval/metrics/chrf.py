"""chrF++ as GenerationEval's metrics/chrF.py (Popović's script) computes it: character
n-grams up to 6 (spaces removed) and word n-grams up to 2 (one leading or trailing ASCII
punctuation mark split off), the reference with the best sentence F per segment, then a
corpus F from the summed counts, arithmetic mean over the n-gram orders, beta = 2."""
import string
from collections import Counter

_PUNCT = set(string.punctuation)


def _words(line):
    out = []
    for w in line.strip().split():
        if len(w) == 1:
            out.append(w)
        elif w[-1] in _PUNCT:
            out += [w[:-1], w[-1]]
        elif w[0] in _PUNCT:
            out += [w[0], w[1:]]
        else:
            out.append(w)
    return out


def _chars(line):
    return list(line.strip().replace(" ", ""))


def _ngrams(seq, order):
    """Counter per order (0-based), only for orders the sequence is long enough for."""
    out = []
    for n in range(1, order + 1):
        c = Counter(tuple(seq[i:i + n]) for i in range(len(seq) - n + 1))
        if not c:
            break
        out.append(c)
    return out


def _stats(ref, hyp, order):
    """(matches, ref total, hyp total) per order present in the reference; matches are
    only recorded for orders with at least one match (the script's dict semantics)."""
    m, rt, ht = {}, {}, {}
    for k, rc in enumerate(ref):
        hc = hyp[k] if k < len(hyp) else Counter()
        ht[k] = sum(hc.values())
        rt[k] = sum(rc.values())
        hit = sum(min(c, hc[g]) for g, c in rc.items() if g in hc)
        if hit or any(g in hc for g in rc):
            m[k] = hit
    return m, rt, ht


def _f_scores(match, reflen, hyplen, beta, orders):
    factor = beta ** 2
    f, p, r = [], [], []
    for k in orders:
        mk = match.get(k, 0.0)
        pk = mk / hyplen[k] if hyplen.get(k, 0) > 0 else 1e-16
        rk = mk / reflen[k] if reflen.get(k, 0) > 0 else 1e-16
        d = factor * pk + rk
        f.append((1 + factor) * pk * rk / d if d > 0 else 1e-16)
        p.append(pk)
        r.append(rk)
    return f, p, r


def chrf_pp(refs_per_seg, hyps, nworder=2, ncorder=6, beta=2.0):
    """Returns the corpus chrF++ on the 0-1 scale. Segments whose references are all empty
    are skipped, as GenerationEval does."""
    norder = float(nworder + ncorder)
    tot_w = [Counter(), Counter(), Counter()]  # matches, ref, hyp per word order
    tot_c = [Counter(), Counter(), Counter()]
    nseg = 0
    for refs, hyp in zip(refs_per_seg, hyps):
        refs = [r for r in refs if r.strip() != ""]
        if not refs:
            continue
        nseg += 1
        hw = _ngrams(_words(hyp), nworder)
        hc = _ngrams(_chars(hyp), ncorder)
        best, best_f = None, -1.0
        for ref in refs:
            sw = _stats(_ngrams(_words(ref), nworder), hw, nworder)
            sc = _stats(_ngrams(_chars(ref), ncorder), hc, ncorder)
            # only orders with a match enter the sentence F (the others would add 0)
            fc, _, _ = _f_scores(sc[0], sc[1], sc[2], beta, list(sc[0]))
            fw, _, _ = _f_scores(sw[0], sw[1], sw[2], beta, list(sw[0]))
            f = (sum(fc) + sum(fw)) / norder
            if f > best_f:
                best_f, best = f, (sw, sc)
        for tot, st in ((tot_w, best[0]), (tot_c, best[1])):
            for i in range(3):
                for k, v in st[i].items():
                    tot[i][k] += v
    if nseg == 0:
        raise ValueError("chrF++: every segment has only empty references")
    fc, _, _ = _f_scores(tot_c[0], tot_c[1], tot_c[2], beta, range(ncorder))
    fw, _, _ = _f_scores(tot_w[0], tot_w[1], tot_w[2], beta, range(nworder))
    return (sum(fc) + sum(fw)) / norder
