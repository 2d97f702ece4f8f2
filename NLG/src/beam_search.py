"""Beam search for GPT-2 decoding (used by gpt2_beam.py), batched over many contexts; the same
search drives a Hugging Face backbone through its own KV cache (nlg/hf_beam_cache.py).

The results are those of the beam search in Microsoft's LoRA `gpt2_beam.py`, step for step:

- a context is decoded for exactly `eval_len` steps; at step i (0-based) the next-token logits go
  through, in this order: the CTRL repetition penalty over the tokens generated so far (a logit
  < 0 is multiplied by the penalty, else divided; from step 1 on), the eos ban while i <
  min_length, and the n-gram ban (a token that would repeat an n-gram of the generated tokens);
  then log(softmax); a hypothesis scores the sum of its log-probs;
- step 0 takes the top `beam` tokens of the one context row; later steps the top `beam` of
  beam x vocab candidates (torch.topk, sorted);
- after every step, each hypothesis whose last token is an eos id is a candidate scoring
  sum / (i + 1) ** length_penalty (its length counts the eos token); an example keeps the
  first best candidate (a later one must score strictly higher), and the hypothesis stays in
  the beam with score -inf; after the last step every hypothesis is a candidate;
- the prediction is a row of `eval_len` ids: the best hypothesis (eos included), then zeros
  (candidates come in order of length, so a new best always covers the previous one).

log_softmax stands for the reference's log(softmax(.)): one pass instead of three, the same
values up to rounding, except that a probability below float32's smallest (a log-prob under
about -87) stays finite instead of -inf; top-k over beam x vocab never reaches one of those
while the vocabulary holds more than beam tokens above it.

What is done differently, for speed only: many contexts per batch (right-padded to the
longest), one prefill per context whose keys / values its beams share, generated keys / values
that a reorder never moves (see "model calls" below), repetition penalty / n-gram ban /
candidates as tensor ops, the top-k over beam x vocab taken from a much smaller set that holds
it (top_candidates), and an example leaves the batch once
no hypothesis can still beat its best candidate (scores only fall, so sum / len^lp is bounded by
the best running sum over the largest len^lp still reachable): the result is the same as
running all steps. Which examples leave, and how many cached positions stay, is read on the host
after every step on a CPU, and once every COMPACT_EVERY steps on a GPU: there the steps in
between are queued without waiting for the device (an example settled in between runs on until
the check, which cannot change its result).
"""
import contextlib
import functools
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from loralib import cpu_linear

NEG_INF = float("-inf")


@dataclass(frozen=True)
class BeamSettings:
    beam: int = 1
    eval_len: int = 256
    min_length: int = 0
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 4
    repetition_penalty: float = 1.0
    eos_token_ids: Tuple[int, ...] = (50256,)

    def __post_init__(self):
        if self.beam < 1:
            raise ValueError(f"beam must be >= 1, got {self.beam}")
        if self.eval_len < 1:
            raise ValueError(f"eval_len must be >= 1, got {self.eval_len}")
        if self.min_length < 0:
            raise ValueError(f"min_length must be >= 0, got {self.min_length}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    def eos_within(self, vocab_size: int) -> List[int]:
        """The eos ids this vocabulary has (an id past the vocabulary can never be generated:
        the default 50256 with a small demo vocabulary)."""
        out = []
        for e in self.eos_token_ids:
            if 0 <= e < vocab_size and e not in out:
                out.append(int(e))
        return out


def truncate_context(context: Sequence[int], seq_len: int, eval_len: int) -> List[int]:
    """The reference keeps the last seq_len - eval_len context tokens, leaving room to generate."""
    room = seq_len - eval_len
    if room <= 0:
        raise ValueError(f"--seq_len ({seq_len}) must be larger than --eval_len ({eval_len})")
    return list(context[-room:])


def unique_contexts(contexts: Sequence[Sequence[int]]) -> Tuple[List[List[int]], List[int]]:
    """(distinct contexts in first-seen order, index of each input's context in that list)."""
    seen: Dict[Tuple[int, ...], int] = {}
    uniq: List[List[int]] = []
    inverse = []
    for c in contexts:
        key = tuple(c)
        j = seen.get(key)
        if j is None:
            j = seen[key] = len(uniq)
            uniq.append(list(c))
        inverse.append(j)
    return uniq, inverse


# ---------------------------------------------------------------------------- score processing

def apply_repetition_penalty_(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> None:
    # Every occurrence of a token reads the unpenalized logit, so a repeated token is penalized
    # once, as with the reference's set() of previous tokens.
    seen = logits.gather(1, history)
    logits.scatter_(1, history, torch.where(seen < 0, seen * penalty, seen / penalty))


def ban_repeated_ngrams_(logits: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """-inf for each token that would complete an n-gram already in `history` (rows = hypotheses)."""
    t = history.shape[1]
    if t < n:
        return
    grams = history.unfold(1, n, 1)                                   # (N, t - n + 1, n)
    tail = history[:, t - n + 1:]                                     # the last n - 1 tokens
    hit = (grams[:, :, : n - 1] == tail.unsqueeze(1)).all(-1)         # n == 1: every unigram
    # amin with +inf leaves a logit alone, with -inf bans it: no host sync, no loop.
    fill = torch.full(hit.shape, float("inf"), dtype=logits.dtype, device=logits.device)
    fill.masked_fill_(hit, NEG_INF)
    logits.scatter_reduce_(1, grams[:, :, n - 1], fill, reduce="amin")


def process_scores_(logits: torch.Tensor, history: Optional[torch.Tensor], step: int,
                    s: BeamSettings, eos: torch.Tensor) -> None:
    if history is not None and s.repetition_penalty != 1.0:
        apply_repetition_penalty_(logits, history, s.repetition_penalty)
    if step < s.min_length and eos.numel():
        logits.index_fill_(1, eos, NEG_INF)
    if history is not None and s.no_repeat_ngram_size > 0 and step + 1 >= s.no_repeat_ngram_size:
        ban_repeated_ngrams_(logits, history, s.no_repeat_ngram_size)


@functools.lru_cache(maxsize=None)
def _column_split(V: int) -> Optional[Tuple[int, int]]:
    """(G, W), G * W == V, G the largest divisor of V in [8, 64]; None if there is none."""
    for G in range(min(64, V), 7, -1):
        if V % G == 0:
            return G, V // G
    return None


def top_candidates(logp: torch.Tensor, beam_scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The reference's step: torch.topk(K, sorted) over each example's K x V candidate scores
    beam_scores[e, t] + logp[e * K + t, v]; returns (scores (n, K), flat indices t * V + v).

    Top-k over half a million scores per example is one of a step's slowest ops on a CPU, so it
    runs on a 29x smaller set (for GPT-2's vocabulary): view each row's V tokens as G groups of
    W "columns" (column c: tokens c, c + W, ...), take each column's max (one vectorized pass),
    and keep the K best columns of the example. The kept scores have the same K best as all
    of them: for the k-th best score v, either every score >= v is in a kept column, or a score
    >= v is in another column, and then each of the K kept columns' maxima is >= that column's
    max >= v, so the kept set holds at least k scores >= v too. The top K of those K x G scores
    are the result: the same scores, computed by the same addition; among exactly equal scores
    the order may differ from torch.topk's (which leaves it unspecified). A vocabulary with no
    divisor in [8, 64] takes the flat top-k (adding the beam scores into logp in place).
    """
    n, K = beam_scores.shape
    V = logp.shape[1]
    split = _column_split(V)
    if split is None:
        cand = logp.view(n, K, V).add_(beam_scores.unsqueeze(-1)).view(n, K * V)
        return cand.topk(K, dim=1, largest=True, sorted=True)
    G, W = split
    cols = logp.view(n * K, G, W).amax(1).view(n, K, W).add_(beam_scores.unsqueeze(-1))
    best_cols = cols.view(n, K * W).topk(K, dim=1, sorted=False).indices          # (n, K)
    t, c = best_cols // W, best_cols % W                                            # row, column
    dev = logp.device
    tokens = c.unsqueeze(-1) + W * torch.arange(G, device=dev)                      # (n, K, G)
    rows = (t + K * torch.arange(n, device=dev).unsqueeze(1)).unsqueeze(-1)
    scores = logp[rows, tokens].add_(beam_scores.gather(1, t).unsqueeze(-1)).view(n, K * G)
    top, j = scores.topk(K, dim=1, largest=True, sorted=True)
    return top, t.gather(1, j // G) * V + tokens.view(n, K * G).gather(1, j)


# ---------------------------------------------------------------------------- model calls
#
# The cache, one (2, examples, T + steps * K, heads, head_dim) tensor per layer: first the
# prefill's context keys / values, one copy per example that its K hypotheses share (attention
# reads it once for all of them; it is never expanded to beams); then the generated keys /
# values, K new positions per step (hypothesis t's at position `used` + t). A reorder moves
# nothing: `anc[e, t, j]` records where the ancestor of hypothesis t (of example e) at step j
# sits, and the attention bias built from it lets a hypothesis see its own context and
# ancestors only. At each check (every step on a CPU, every COMPACT_EVERY on a GPU), the
# positions no hypothesis descends from any more are dropped (beams share most of their past,
# so a few more than one position per step stay alive rather than K): attention then reads
# little more than each hypothesis needs. The same check drops settled examples; it reads one
# small tensor on the host, the loop's only read. A Hugging Face backbone's attention layers
# fill and read this same cache (nlg/hf_beam_cache.py).

COMPACT_EVERY = 4


def open_cache(model, ids: torch.Tensor, lengths: torch.Tensor, beam: int, steps: int):
    """(logits (B, vocab) after each row's last context token, the search's cache). A model
    that brings its own cache (a Hugging Face backbone: nlg/hf_beam_cache.py) gives both; the
    GPT-2 model gets the shared-prefix cache below. A cache answers step_logits, reorder, live,
    compact and select."""
    own = getattr(model, "beam_cache", None)
    if own is not None:
        return own(ids, lengths, beam, steps)
    logits, presents = prefill(model, ids, lengths)
    return logits, _BeamCache(presents, lengths, beam, steps)


def prefill(model, ids: torch.Tensor, lengths: torch.Tensor):
    """Logits (B, vocab) after each row's last context token (rows right-padded), and the cache:
    one (2, B, heads, T, head_dim) tensor per layer. The vocabulary projection runs only where a
    token is chosen, not on every context position."""
    rows = torch.arange(ids.shape[0], device=ids.device)
    hidden, presents = model.transformer(ids)
    return model.lm_head(hidden[rows, lengths - 1]), presents


class _BeamCache:
    def __init__(self, presents, ctx_len: torch.Tensor, beam: int, steps: int):
        _, b, H, T, hd = presents[0].shape
        self.T, self.used = T, 0
        dtype, dev = presents[0].dtype, presents[0].device
        # A position is read only after it has been written: no zero fill needed.
        self.kv = []
        for p in presents:
            kv = p.new_empty(2, b, T + steps * beam, H, hd)       # position-major
            kv[:, :, :T] = p.transpose(2, 3)
            self.kv.append(kv)
        pad = torch.arange(T, device=dev)[None, :] >= ctx_len[:, None]
        self.ctx_bias = torch.zeros(b, 1, 1, T, dtype=dtype, device=dev).masked_fill_(pad[:, None, None], NEG_INF)
        self.anc = torch.zeros(b, beam, steps, dtype=torch.long, device=dev)

    def add_step(self, j: int):
        """Room for step j's K new keys / values: (their first position in kv, the attention bias
        (b, 1, K, T + used), 0 where a hypothesis may attend: its context's real tokens, its
        ancestors, its own new token; -inf elsewhere)."""
        b, K = self.anc.shape[:2]
        self.anc[:, :, j] = self.used + torch.arange(K, device=self.anc.device)
        start, self.used = self.T + self.used, self.used + K
        gen = torch.full((b, K, self.used), NEG_INF, dtype=self.ctx_bias.dtype, device=self.anc.device)
        gen.scatter_(2, self.anc[:, :, : j + 1], 0.0)
        return start, torch.cat((self.ctx_bias.expand(b, 1, K, self.T), gen.unsqueeze(1)), dim=-1)

    def reorder(self, src: torch.Tensor, steps: int) -> None:
        """Hypothesis t of example e continues hypothesis src[e, t]: it inherits its ancestors
        over the first `steps` steps."""
        idx = src.unsqueeze(-1).expand(-1, -1, steps)
        self.anc[:, :, :steps] = self.anc[:, :, :steps].gather(1, idx)

    def live(self, steps: int) -> torch.Tensor:
        """(b, used) bool, on the device: the generated positions some hypothesis descends from
        over the first `steps` steps."""
        b = self.anc.shape[0]
        anc = self.anc[:, :, :steps].reshape(b, -1)
        return torch.zeros(b, self.used, dtype=torch.bool, device=anc.device).scatter_(1, anc, True)

    def compact(self, steps: int, live: torch.Tensor, n: int) -> None:
        """Keep only the live positions (`live` as live() gives it, of the examples kept), in
        their order; n: the most live positions of an example (read on the host once)."""
        if n == self.used:
            return                          # nothing to drop
        b, K = self.anc.shape[:2]
        anc = self.anc[:, :, :steps].reshape(b, -1)
        keep = torch.sort((~live).to(torch.uint8), dim=1, stable=True).indices[:, :n]    # (b, n)
        # Rows of the flattened (examples x positions) axis: whole positions, one copy each.
        S = self.kv[0].shape[2]
        rows = (keep + self.T + S * torch.arange(b, device=keep.device).unsqueeze(1)).reshape(-1)
        for kv in self.kv:
            flat = kv.view(2, b * S, -1)
            kv[:, :, self.T:self.T + n] = flat.index_select(1, rows).view(2, b, n, *kv.shape[3:])
        new_pos = live.long().cumsum(1) - 1
        self.anc[:, :, :steps] = new_pos.gather(1, anc).view(b, K, steps)
        self.used = n

    def select(self, keep: torch.Tensor) -> None:
        """Keep these examples only."""
        self.kv = [kv.index_select(1, keep) for kv in self.kv]
        self.ctx_bias, self.anc = self.ctx_bias[keep], self.anc[keep]

    def step_logits(self, model, tokens, positions, j: int, compile_backend=None):
        return step_logits(model, self, tokens, positions, j, compile_backend)


def step_logits(model, cache: _BeamCache, tokens: torch.Tensor, positions: torch.Tensor, j: int,
                compile_backend: Optional[str] = None):
    """Logits (b * K, vocab) for one new token per hypothesis (tokens, positions (b, K)), the
    tokens chosen at step j; compile_backend: through torch.compile (one graph per step)."""
    start, bias = cache.add_step(j)
    if not compile_backend:
        return _model_step(model, cache.kv, tokens, positions, start, bias)
    # Compiled graphs are guarded on their inputs' strides: `tokens` is a column of the
    # growing history and `positions` an expanded view, whose strides change from step to step
    # (a recompilation each time); contiguous copies of these b x K ids keep one graph.
    return _compiled_step(compile_backend)(model, cache.kv, tokens.contiguous(),
                                           positions.contiguous(), start, bias)


def _model_step(model, kv, tokens, positions, start: int, bias):
    hidden = model.transformer.beam_step(tokens, positions, kv, start, bias)
    return model.lm_head(hidden.reshape(-1, hidden.shape[-1]))


@functools.lru_cache(maxsize=None)
def _compiled_step(backend: str):
    """The model step through torch.compile, one wrapper per backend for the whole run: its
    graphs serve every step and batch (batch, cache length and `start` are symbolic; after the
    first step's graph, one more with `start` symbolic)."""
    from traincore import compiled
    step = compiled(_model_step, backend=backend)
    try:
        from torch.fx.experimental import _config as fx_config
    except ImportError:
        fx_config = None

    def run(*args):
        # "Duck sizing" would tie sizes that happen to be equal (the batch and the beam, both
        # 3, say) and compile again when they part; these sizes are unrelated.
        with fx_config.patch(use_duck_shape=False) if fx_config is not None else contextlib.nullcontext():
            return step(*args)
    return run


def _score_dtype(logits):
    # Scores are summed in fp32 at least (fp64 models, as in tests, stay fp64).
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


# ---------------------------------------------------------------------------- the search

class _Best:
    """Best candidate per example, updated as the reference's loop over hypotheses does."""

    def __init__(self, n: int, eval_len: int, device, dtype):
        self.score = torch.full((n,), NEG_INF, device=device, dtype=dtype)
        self.has = torch.zeros(n, dtype=torch.bool, device=device)
        self.seq = torch.zeros(n, eval_len, dtype=torch.long, device=device)

    def offer(self, ex: torch.Tensor, cand: torch.Tensor, fin: torch.Tensor, history: torch.Tensor):
        """ex (b,): example ids; cand, fin (b, K): candidate scores and which hypotheses count;
        history (b * K, L): the hypotheses. The first maximal candidate wins when it beats the
        best so far strictly (or is the example's first)."""
        b, k = cand.shape
        top = cand.masked_fill(~fin, NEG_INF).max(1).values
        first = (fin & (cand == top.unsqueeze(1))).to(torch.uint8).argmax(1)
        old_has, old_score = self.has[ex], self.score[ex]
        upd = fin.any(1) & (~old_has | (old_score < top))
        self.score[ex] = torch.where(upd, top, old_score)
        self.has[ex] = old_has | upd
        L = history.shape[1]
        rows = torch.arange(b, device=cand.device) * k + first
        old = self.seq[ex, :L]
        self.seq[ex, :L] = torch.where(upd.unsqueeze(1), history[rows], old)


@torch.no_grad()
def beam_search(model, contexts: Sequence[Sequence[int]], s: BeamSettings, pad_to: int = 0,
                early_exit: bool = True, compile_backend: Optional[str] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Decode a batch of contexts. Returns (predictions (B, eval_len) long, best scores (B,)).

    pad_to: pad every context to at least this many tokens (only to reproduce the reference's
    fixed-length padding in benchmarks; the result does not change).
    early_exit: drop an example from the batch once its result is settled (same result).
    compile_backend: run each step's model call through torch.compile with this backend.
    """
    with cpu_linear.packed_weights(rows=len(contexts) * s.beam):   # CPU only; inert if nested
        return _beam_search(model, contexts, s, pad_to, early_exit, compile_backend)


def _beam_search(model, contexts, s: BeamSettings, pad_to: int, early_exit: bool,
                 compile_backend: Optional[str]):
    device = next(model.parameters()).device
    B, K, E = len(contexts), s.beam, s.eval_len
    if B == 0:
        return torch.zeros(0, E, dtype=torch.long), torch.zeros(0)
    lengths = [len(c) for c in contexts]
    if min(lengths) == 0:
        raise ValueError("beam_search: a context is empty (nothing to condition on)")
    T = max(max(lengths), pad_to)
    ids = torch.zeros(B, T, dtype=torch.long)
    for b, c in enumerate(contexts):
        ids[b, : len(c)] = torch.as_tensor(c, dtype=torch.long)
    ids = ids.to(device)
    ctx_len = torch.as_tensor(lengths, dtype=torch.long, device=device)

    logits, cache = open_cache(model, ids, ctx_len, K, E - 1)
    V = logits.shape[-1]
    if K > V:
        raise ValueError(f"beam ({K}) is larger than the vocabulary ({V})")
    eos = torch.as_tensor(s.eos_within(V), dtype=torch.long, device=device)
    logits = _score_dtype(logits)
    best = _Best(B, E, device, logits.dtype)

    # Step 0: one row per example, then K hypotheses each.
    process_scores_(logits, None, 0, s, eos)
    beam_scores, tok = torch.log_softmax(logits, dim=-1).topk(K, dim=1, largest=True, sorted=True)
    history = tok.reshape(-1, 1)
    active = torch.arange(B, device=device)
    _offer_finished(best, active, beam_scores, history, eos, 0, s)
    every = check_every(device)

    for i in range(1, E):
        j = i - 1           # the step whose tokens go in now
        if j and j % every == 0:
            # The one host read of these `every` steps (none in between: a GPU runs ahead):
            # which examples are settled, and how many generated positions each still needs.
            live = cache.live(j)
            settled = _settled(best, active, beam_scores, j, s) if early_exit else \
                torch.zeros_like(active, dtype=torch.bool)
            b = active.numel()
            read = torch.cat((settled.long(), live.sum(1))).tolist()
            kept = [e for e in range(b) if not read[e]]
            if not kept:
                break
            if len(kept) < b:
                keep = torch.as_tensor(kept, device=device)
                rows = (keep.unsqueeze(1) * K + torch.arange(K, device=device)).reshape(-1)
                cache.select(keep)
                history, ctx_len = history[rows], ctx_len[keep]
                beam_scores, active = beam_scores[keep], active[keep]
                live = live[keep]
            cache.compact(j, live, max(read[b + e] for e in kept))
        n = active.numel()
        # The tokens chosen at step i - 1, at position ctx_len + i - 1.
        positions = (ctx_len + (i - 1)).unsqueeze(1).expand(n, K)
        logits = _score_dtype(cache.step_logits(model, history[:, -1].view(n, K), positions, j,
                                                compile_backend))
        process_scores_(logits, history, i, s, eos)
        beam_scores, flat = top_candidates(torch.log_softmax(logits, dim=-1), beam_scores)
        parent = flat // V                                          # (n, K): beam within the example
        cache.reorder(parent, i)
        src = (parent + torch.arange(n, device=device).unsqueeze(1) * K).reshape(-1)
        history = torch.cat([history[src], (flat % V).reshape(-1, 1)], dim=1)
        _offer_finished(best, active, beam_scores, history, eos, i, s)
    else:
        # Every hypothesis still running after the last step is a candidate (examples that left
        # early cannot change).
        cand = beam_scores / (E ** s.length_penalty)
        best.offer(active, cand, torch.ones_like(cand, dtype=torch.bool), history)
    return best.seq.cpu(), best.score.cpu()


def check_every(device: torch.device) -> int:
    """Steps between two host reads of which examples are settled: COMPACT_EVERY where steps
    queue on the device (a GPU), 1 on a CPU (no queue to keep full; a settled example leaves up
    to COMPACT_EVERY - 1 steps sooner, and dead positions are dropped as they die)."""
    return 1 if device.type == "cpu" else COMPACT_EVERY


def _offer_finished(best, active, beam_scores, history, eos, step, s):
    fin = torch.isin(history[:, -1], eos).view_as(beam_scores)
    best.offer(active, beam_scores / ((step + 1) ** s.length_penalty), fin, history)
    beam_scores.masked_fill_(fin, NEG_INF)


def _settled(best, active, beam_scores, step, s) -> torch.Tensor:
    """(examples in `active`,) bool, on the device: those no later step can change (they may
    stay in the batch until the next check: what they compute then cannot beat their best)."""
    E = s.eval_len
    # Any later candidate has sum <= the best running sum (log-probs are <= 0) and length in
    # [step + 2, E]; for a sum <= 0, sum / len^lp is largest at the largest len^lp.
    denom = max(L ** s.length_penalty for L in range(step + 2, E + 1))
    bound = beam_scores.max(1).values / denom
    return best.has[active] & (best.score[active] >= bound)


# ---------------------------------------------------------------------------- many contexts

def batches_by_length(lengths: Sequence[int], examples_per_batch: int,
                      cache_rows: Optional[int] = None, beam: int = 1, eval_len: int = 0,
                      pad_to: int = 0) -> List[List[int]]:
    """Index batches over contexts sorted by length (longest first), so padding stays small.

    At most `examples_per_batch` contexts per batch and, when cache_rows is given, at most that
    many KV-cache positions in all (examples x beam x (longest context + eval_len - 1)); a
    context alone over the budget still gets a batch of its own. The contexts left are spread
    evenly over the fewest batches that hold them (72 by 16: 15, 15, 14, 14, 14, not four of 16
    and one of 8): as many steps to run, none of them on a small, slow batch."""
    order = sorted(range(len(lengths)), key=lambda j: (-lengths[j], j))
    cap = max(1, int(examples_per_batch))
    plan: List[List[int]] = []
    a = 0
    while a < len(order):
        left = len(order) - a
        n = -(-left // -(-left // cap))                  # ceil(left / the batches they need)
        if cache_rows is not None:
            per_example = beam * (max(lengths[order[a]], pad_to) + eval_len - 1)
            n = max(1, min(n, cache_rows // max(per_example, 1)))
        plan.append(order[a:a + n])
        a += n
    return plan


def decode_contexts(model, contexts: Sequence[Sequence[int]], s: BeamSettings,
                    examples_per_batch: int, pad_to: int = 0, early_exit: bool = True,
                    progress=None, cache_rows: Optional[int] = None,
                    compile_backend: Optional[str] = None) -> List[List[int]]:
    """Predictions (eval_len ids each) for every context, in input order (batches as in
    batches_by_length); progress(n) is called after each batch with its number of contexts."""
    results: List[Optional[List[int]]] = [None] * len(contexts)
    plan = batches_by_length([len(c) for c in contexts], examples_per_batch, cache_rows,
                             s.beam, s.eval_len, pad_to)
    # one packing of the weights for every batch (CPU only; see cpu_linear.packed_weights)
    with cpu_linear.packed_weights(rows=max(map(len, plan), default=1) * s.beam):
        for idx in plan:
            seqs, _ = beam_search(model, [contexts[j] for j in idx], s, pad_to=pad_to,
                                  early_exit=early_exit, compile_backend=compile_backend)
            for j, row in zip(idx, seqs.tolist()):
                results[j] = row
            if progress is not None:
                progress(len(idx))          # contexts finished by this batch
    return results
