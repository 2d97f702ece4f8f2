"""TER as pyter computes it (GenerationEval's TER): greedy phrase shifts, each taken while it
lowers the word edit distance to the reference, ties resolved as pyter's sort does; the
score is (shifts + remaining edits) / reference length. GenerationEval takes the minimum over
the references of a segment (an empty reference scores 1) and averages over segments.

pyter tries every shift of every pair one at a time in pure Python. Here one greedy step of
all pairs of the corpus is scored at once: every candidate shift becomes a row of a batch,
and the edit distances of the batch come from one vectorised DP (integers: exact).
"""
import numpy as np

# Myers' bit-parallel DP keeps a reference in one uint64 (one spare bit for the carry)
MAX_BITS_REF = 62


def _distances_dp(hyps, ref):
    """Word edit distance of each row of hyps (C x n word ids) to ref (m word ids)."""
    c, n = hyps.shape
    m = len(ref)
    steps = np.arange(m + 1)
    prev = np.broadcast_to(steps, (c, m + 1)).copy()
    cost = (hyps[:, :, None] != ref[None, None, :]).astype(np.int64)
    cur = np.empty_like(prev)
    for i in range(n):
        cur[:, 0] = prev[:, 0] + 1
        np.minimum(prev[:, :-1] + cost[:, i, :], prev[:, 1:] + 1, out=cur[:, 1:])
        # insertions chain along the row: cur[j] = min_k<=j (cur[k] + j - k)
        cur = np.minimum.accumulate(cur - steps, axis=1) + steps
        prev, cur = cur, prev
    return prev[:, m]


def _distances_bits(hyps, lens, peq, mask, top):
    """Edit distances of a batch of rows, each against its own reference, with Myers'
    bit-parallel recurrence (one uint64 column state per row instead of m DP cells).
    hyps: (C x n) word ids, valid up to lens; peq: (C x vocab) bit masks of the reference
    positions holding each word; mask, top: per row (1 << m) - 1 and m - 1."""
    c, n = hyps.shape
    one = np.uint64(1)
    vp = mask.copy()
    vn = np.zeros(c, dtype=np.uint64)
    score = top.astype(np.int64) + 1
    rows = np.arange(c)
    for i in range(n):
        live = i < lens
        eq = peq[rows, hyps[:, i]]
        xv = eq | vn
        xh = (((eq & vp) + vp) ^ vp) | eq
        ph = vn | ~(xh | vp)
        mh = vp & xh
        step = ((ph >> top) & one).astype(np.int64) - ((mh >> top) & one).astype(np.int64)
        score += np.where(live, step, 0)
        ph = (ph << one) | one
        mh = mh << one
        vp = np.where(live, (mh | ~(xv | ph)) & mask, vp)
        vn = np.where(live, ph & xv & mask, vn)
    return score


def _shifted(hyp, ref):
    """Every shift pyter considers, as a (C x n) array of shifted hypotheses (word ids).

    A candidate moves hyp[i:i+k] so that it starts at index j of the hypothesis with the
    block removed, for each i != j with hyp[i] == ref[j], k being the longest run of matches
    from there (hyp[i+t] == ref[j+t])."""
    n, m = len(hyp), len(ref)
    match = hyp[:, None] == ref[None, :]
    diag = np.arange(min(n, m))
    match[diag, diag] = False
    ii, jj = np.nonzero(match)
    if len(ii) == 0:
        return None
    kk = np.ones(len(ii), dtype=np.int64)
    grow = np.arange(len(ii))
    while len(grow):
        a, b = ii[grow] + kk[grow], jj[grow] + kk[grow]
        ok = (a < n) & (b < m)
        grow, a, b = grow[ok], a[ok], b[ok]
        grow = grow[hyp[a] == ref[b]]
        kk[grow] += 1
    p = np.arange(n)[None, :]
    # a ref index past the end of the shortened sentence inserts at its end (list slicing)
    i, j, k = ii[:, None], np.minimum(jj, n - kk)[:, None], kk[:, None]
    # position p reads from the sentence with the block removed (index q there is q, or
    # q + k past the block, in the original) or from inside the block
    q = np.where(p < j, p, p - k)
    src = np.where(q < i, q, q + k)
    src = np.where((p >= j) & (p < j + k), i + p - j, src)
    return hyp[src]


class _Pair:
    """One hypothesis/reference pair being shifted greedily."""

    def __init__(self, hyp, ref):
        vocab = {}
        self.ref = np.array([vocab.setdefault(w, len(vocab)) for w in ref], dtype=np.int64)
        self.hyp = np.array([vocab.setdefault(w, len(vocab)) for w in hyp], dtype=np.int64)
        self.words = sorted(vocab, key=vocab.get)
        self.peq = np.zeros(len(vocab), dtype=np.uint64)
        if len(ref) <= MAX_BITS_REF:
            for pos, w in enumerate(self.ref.tolist()):
                self.peq[w] |= np.uint64(1 << pos)
        self.shifts = 0
        self.dist = None
        self.moved = None

    def take_best(self, dists):
        """Apply the best shift given the distances of self.moved; False when none helps."""
        gain = self.dist - dists
        top = int(gain.max())
        if top <= 0:
            return False
        # pyter sorts (gain, shifted words) and takes the last: among equal gains, the
        # lexicographically largest shifted sentence (compared as strings)
        best = max(np.flatnonzero(gain == top),
                   key=lambda t: [self.words[w] for w in self.moved[t]])
        self.hyp = self.moved[best]
        self.dist -= top
        self.shifts += 1
        return True

    def score(self):
        return (self.shifts + self.dist) / len(self.ref)


def _batch_distances(pairs, batches):
    """Distances of each batch (C_p x n_p word ids) to its pair's reference."""
    out = [None] * len(pairs)
    short = []
    for t, p in enumerate(pairs):
        if batches[t].shape[1] == 0:
            out[t] = np.full(len(batches[t]), len(p.ref))
        elif len(p.ref) > MAX_BITS_REF:
            out[t] = _distances_dp(batches[t], p.ref)
        else:
            short.append(t)
    if not short:
        return out
    sizes = [len(batches[t]) for t in short]
    nmax = max(batches[t].shape[1] for t in short)
    vmax = max(len(pairs[t].peq) for t in short)
    hyps = np.zeros((sum(sizes), nmax), dtype=np.int64)
    peqs = np.zeros((len(short), vmax), dtype=np.uint64)
    row = 0
    for s_i, t in enumerate(short):
        b = batches[t]
        hyps[row:row + len(b), :b.shape[1]] = b
        row += len(b)
        peqs[s_i, :len(pairs[t].peq)] = pairs[t].peq
    owner = np.repeat(np.arange(len(short)), sizes)
    lens = np.array([batches[t].shape[1] for t in short])[owner]
    ms = np.array([len(pairs[t].ref) for t in short], dtype=np.uint64)
    mask = (np.uint64(1) << ms) - np.uint64(1)
    d = _distances_bits(hyps, lens, peqs[owner], mask[owner], (ms - np.uint64(1))[owner])
    for t, piece in zip(short, np.split(d, np.cumsum(sizes)[:-1])):
        out[t] = piece
    return out


def ter_many(pairs_tok):
    """TER of each (hyp tokens, ref tokens) pair; every ref must be non-empty."""
    pairs = [_Pair(h, r) for h, r in pairs_tok]
    for p, d in zip(pairs, _batch_distances(pairs, [p.hyp[None, :] for p in pairs])):
        p.dist = int(d[0])
    active = pairs
    while active:
        for p in active:
            p.moved = _shifted(p.hyp, p.ref)
        active = [p for p in active if p.moved is not None]
        if not active:
            break
        dists = _batch_distances(active, [p.moved for p in active])
        active = [p for p, d in zip(active, dists) if p.take_best(d)]
    return [p.score() for p in pairs]


def ter(hyp, ref):
    """hyp, ref: token lists; ref must be non-empty."""
    return ter_many([(hyp, ref)])[0]


def corpus_ter(refs_tok, hyps_tok):
    """refs_tok: per segment, a list of token lists; hyps_tok: token lists."""
    todo = [(h, r) for refs, h in zip(refs_tok, hyps_tok) for r in refs if r]
    scores = iter(ter_many(todo))
    per_seg = [min([next(scores) if r else 1.0 for r in refs]) for refs in refs_tok]
    return sum(per_seg) / len(per_seg)
