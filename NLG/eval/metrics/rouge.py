"""ROUGE-L as the COCO caption code computes it (best precision and best recall over the
references, taken separately, combined with beta = 1.2; averaged over segments)."""

BETA = 1.2


def lcs_length(a, b):
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l_segment(hyp, refs):
    """hyp, refs: token lists (the COCO code splits on ' ', so '' is one empty token)."""
    prec = rec = 0.0
    for r in refs:
        lcs = lcs_length(r, hyp)
        prec = max(prec, lcs / float(len(hyp)))
        rec = max(rec, lcs / float(len(r)))
    if prec == 0 or rec == 0:
        return 0.0
    return (1 + BETA ** 2) * prec * rec / float(rec + BETA ** 2 * prec)


def rouge_l(refs_per_seg, hyps):
    """Inputs are tokenized strings, split on ' ' as the COCO code does."""
    scores = [rouge_l_segment(h.split(" "), [r.split(" ") for r in refs])
              for refs, h in zip(refs_per_seg, hyps)]
    return sum(scores) / len(scores)
