"""Corpus BLEU in the two flavours the official scorers use.

- e2e_bleu: e2e-metrics' pymteval BLEUScore (`measure_scores.py -p`): mteval-v13a tokens,
  case-insensitive n-grams, closest reference length (ties: the shorter), a tiny floor on zero
  counts so the score is always defined.
- multi_bleu_detok: Moses' multi-bleu-detok.perl, which GenerationEval runs: the same
  tokenizer but case-sensitive, and zero precision gives (practically) zero BLEU. Returned on
  the 0-100 scale the script prints (it prints 2 decimals; we return full precision).
"""
import math
from collections import Counter
from functools import lru_cache

from .tokenization import mteval_tokenize


def ngram_counts(tokens, n):
    return Counter(zip(*[tokens[i:] for i in range(n)]))


def max_ref_counts(refs, n):
    """Per n-gram, the largest count in any one reference (BLEU's clipping bound)."""
    best = Counter()
    for ref in refs:
        for g, c in ngram_counts(ref, n).items():
            if c > best[g]:
                best[g] = c
    return best


@lru_cache(maxsize=1 << 16)  # BLEU and NIST tokenize the same segments
def mteval_tokens(text, lowercase=False):
    """pymteval splits on ' ', so an empty segment is one empty token: kept for agreement."""
    toks = mteval_tokenize(text).split(" ")
    return tuple(t.lower() for t in toks) if lowercase else tuple(toks)


def closest_ref_len(hyp_len, ref_lens):
    return min(ref_lens, key=lambda r: (abs(r - hyp_len), r))


def e2e_bleu(refs_per_seg, hyps, max_n=4):
    hits = [0] * max_n
    cand = [0] * max_n
    ref_len = 0
    for refs, hyp in zip(refs_per_seg, hyps):
        h = mteval_tokens(hyp, lowercase=True)
        rs = [mteval_tokens(r, lowercase=True) for r in refs]
        for n in range(1, max_n + 1):
            bound = max_ref_counts(rs, n)
            hits[n - 1] += sum(min(c, bound[g]) for g, c in ngram_counts(h, n).items())
            # pymteval adds len - (n-1) even when that is negative; kept for agreement
            cand[n - 1] += len(h) - (n - 1)
        ref_len += closest_ref_len(len(h), [len(r) for r in rs])
    bp = 1.0
    if cand[0] <= ref_len:
        bp = math.exp(1.0 - ref_len / (float(cand[0]) if cand[0] else 1e-5))
    log_prec = sum(math.log(max(h_, 1e-15) / max(c_, 1e-9)) for h_, c_ in zip(hits, cand))
    return bp * math.exp(log_prec / max_n)


def multi_bleu_detok(refs_per_seg, hyps, max_n=4):
    correct = [0] * max_n
    total = [0] * max_n
    hyp_len = ref_len = 0
    for refs, hyp in zip(refs_per_seg, hyps):
        h = mteval_tokenize(hyp).split()
        rs = [mteval_tokenize(r).split() for r in refs]
        hyp_len += len(h)
        ref_len += closest_ref_len(len(h), [len(r) for r in rs])
        for n in range(1, max_n + 1):
            bound = max_ref_counts(rs, n)
            for g, c in ngram_counts(h, n).items():
                total[n - 1] += c
                correct[n - 1] += min(c, bound[g])
    if ref_len == 0 or hyp_len == 0:
        return 0.0  # the perl script prints 0 or dies dividing by zero here
    bp = math.exp(1 - ref_len / hyp_len) if hyp_len < ref_len else 1.0
    # the perl script scores log(0) as -9999999999
    logs = [math.log(c / t) if t and c else -9999999999.0 for c, t in zip(correct, total)]
    return 100.0 * bp * math.exp(sum(logs) / max_n)
