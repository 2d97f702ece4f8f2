"""The batched beam search (NLG/src/beam_search.py) against a plain per-example transcription of
the reference algorithm (Microsoft LoRA's gpt2_beam.py), on tiny random GPT-2 models.

The reference below runs one context at a time, unpadded, its beams as rows, with Python loops
for the penalty, the n-gram ban and the candidates, as the original does. Models run in float64
so that batching and padding (different summation order) cannot flip a near-tie: the token
sequences must be identical.
"""

import pytest
import torch

from nlg.beam_search import (BeamSettings, ban_repeated_ngrams_, batches_by_length, beam_search,
                             decode_contexts, top_candidates, truncate_context, unique_contexts)

NEG_INF = float("-inf")


def tiny_lm(vocab, seed, embed_std=0.02, eos_boost=None, n_layer=2, n_embd=32, n_head=4):
    """A small random GPT2LMModel in float64. embed_std sets how confident it is (logits come
    from the tied embedding); eos_boost=(token, c) makes that token likely everywhere."""
    from nlg.model import GPT2Config, GPT2LMModel
    torch.manual_seed(seed)
    model = GPT2LMModel(GPT2Config(vocab_size_or_config_json_file=vocab, n_positions=128, n_ctx=128,
                                   n_embd=n_embd, n_layer=n_layer, n_head=n_head))
    core = getattr(model, "transformer", model)
    with torch.no_grad():
        core.wte.weight.normal_(std=embed_std)
        if eos_boost is not None:
            tok, c = eos_boost
            u = torch.randn(n_embd)
            core.ln_f.bias.copy_(u)
            core.wte.weight[tok] += c * u / u.norm() ** 2
    return model.double().eval()


# ---------------------------------------------------------------------------- the reference

def reference_beam(model, context, s: BeamSettings):
    K, E = s.beam, s.eval_len
    with torch.no_grad():
        logits, past = model(torch.tensor([list(context)] * K))
        logits = logits[:, -1, :]
        V = logits.shape[-1]
        eos = [e for e in s.eos_token_ids if e < V]
        beam_scores = torch.zeros(K, dtype=logits.dtype)
        best_score, best_seq = None, [0] * E
        history = None
        for i in range(E):
            if i > 0:
                token = torch.tensor([[h[-1]] for h in history])
                logits, past = model(token, past=past)
                logits = logits[:, -1, :]
            logits = logits.clone()
            if history is not None and s.repetition_penalty != 1.0:
                for h in range(K):
                    for t in set(history[h]):
                        if logits[h, t] < 0:
                            logits[h, t] *= s.repetition_penalty
                        else:
                            logits[h, t] /= s.repetition_penalty
            if i < s.min_length:
                for e in eos:
                    logits[:, e] = NEG_INF
            n = s.no_repeat_ngram_size
            if history is not None and n > 0 and i + 1 >= n:
                for h in range(K):
                    toks = history[h]
                    seen = {}
                    for j in range(len(toks) - n + 1):
                        seen.setdefault(tuple(toks[j:j + n - 1]), []).append(toks[j + n - 1])
                    for t in seen.get(tuple(toks[len(toks) - n + 1:]), []):
                        logits[h, t] = NEG_INF
            logp = torch.log(torch.softmax(logits, dim=-1))
            if i == 0:
                scores = logp[0]
            else:
                scores = (beam_scores.unsqueeze(1) + logp).view(-1)
            top, idx = torch.topk(scores, K)
            beam_id, token_id = (idx // V).tolist(), (idx % V).tolist()
            past = [p.index_select(1, torch.tensor(beam_id)) for p in past]
            beam_scores = top.clone()
            if history is None:
                history = [[t] for t in token_id]
            else:
                history = [history[b] + [t] for b, t in zip(beam_id, token_id)]
            for h in range(K):
                if history[h][-1] in eos:
                    sc = beam_scores[h] / (i + 1) ** s.length_penalty
                    if best_score is None or best_score < sc:
                        best_score = sc
                        best_seq[:i + 1] = history[h]
                    beam_scores[h] = NEG_INF
        for h in range(K):
            sc = beam_scores[h] / E ** s.length_penalty
            if best_score is None or best_score < sc:
                best_score = sc
                best_seq[:E] = history[h]
    return best_seq


# ---------------------------------------------------------------------------- fixtures

VOCAB = 48


@pytest.fixture(scope="module")
def peaky():
    """Confident random model: it loops, so n-gram bans and repetition penalty bite."""
    return tiny_lm(VOCAB, seed=1, embed_std=0.6)


@pytest.fixture(scope="module")
def flat():
    """Near-uniform random model: many candidates close together, eos reached at random."""
    return tiny_lm(VOCAB, seed=2, embed_std=0.05)


def _contexts(seed, n=7):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        L = int(torch.randint(1, 9, (1,), generator=g))
        out.append(torch.randint(0, VOCAB, (L,), generator=g).tolist())
    out.append(list(out[0]))  # a duplicate context
    return out


SETTINGS = [
    pytest.param(BeamSettings(beam=1, eval_len=10, no_repeat_ngram_size=0,
                              eos_token_ids=(50256, 3, 8, 9, 10)), id="greedy"),
    pytest.param(BeamSettings(beam=4, eval_len=12, length_penalty=0.8, no_repeat_ngram_size=2, min_length=3,
                              eos_token_ids=(50256, 3, 5)), id="b4-lp0.8-ng2-min3"),
    pytest.param(BeamSettings(beam=5, eval_len=12, length_penalty=1.0, no_repeat_ngram_size=3,
                              repetition_penalty=1.3, eos_token_ids=(4,)), id="b5-ng3-rep1.3"),
    pytest.param(BeamSettings(beam=3, eval_len=9, length_penalty=-0.5, no_repeat_ngram_size=1,
                              repetition_penalty=0.7, eos_token_ids=(50256, 6, 7)), id="b3-lpneg-ng1-rep0.7"),
    pytest.param(BeamSettings(beam=6, eval_len=11, length_penalty=0.0, no_repeat_ngram_size=4, min_length=20,
                              eos_token_ids=(1, 2)), id="b6-lp0-ng4-min_past_end"),
]


@pytest.mark.parametrize("model_name", ["peaky", "flat"])
@pytest.mark.parametrize("s", SETTINGS)
def test_batched_equals_per_example_reference(request, model_name, s):
    model = request.getfixturevalue(model_name)
    contexts = _contexts(seed=len(model_name) + s.beam)
    expected = [reference_beam(model, c, s) for c in contexts]
    got, _ = beam_search(model, contexts, s)
    assert got.tolist() == expected
    # split into batches sorted by length, and padded to a fixed length like the reference
    assert decode_contexts(model, contexts, s, examples_per_batch=3) == expected
    got_pad, _ = beam_search(model, contexts[:3], s, pad_to=20, early_exit=False)
    assert got_pad.tolist() == expected[:3]


def test_eos_heavy_model_leaves_early_with_the_same_result():
    """A model that likes eos settles examples early; leaving the batch must not change them."""
    model = tiny_lm(VOCAB, seed=3, embed_std=0.3, eos_boost=(5, 4.0))
    s = BeamSettings(beam=4, eval_len=16, length_penalty=0.8, no_repeat_ngram_size=3, eos_token_ids=(5,))
    contexts = _contexts(seed=11)
    expected = [reference_beam(model, c, s) for c in contexts]
    calls = []
    # one call of the first block's MLP per model call: the prefill and each step
    hook = model.transformer.h[0].mlp.register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        early, _ = beam_search(model, contexts, s, early_exit=True)
        n_early = len(calls)
        calls.clear()
        full, _ = beam_search(model, contexts, s, early_exit=False)
        n_full = len(calls)
    finally:
        hook.remove()
    assert early.tolist() == expected == full.tolist()
    assert any(5 in row for row in expected)
    assert n_early < n_full


@pytest.mark.parametrize("every", [1, 3, 10 ** 6])
def test_dropping_dead_positions_changes_nothing(monkeypatch, peaky, every):
    """Compacting the generated keys / values after every step, every third, or never."""
    from nlg import beam_search as bs
    monkeypatch.setattr(bs, "COMPACT_EVERY", every)
    s = BeamSettings(beam=4, eval_len=20, length_penalty=0.8, no_repeat_ngram_size=3, eos_token_ids=(5,))
    contexts = _contexts(seed=5)
    got, _ = beam_search(peaky, contexts, s, early_exit=True)
    assert got.tolist() == [reference_beam(peaky, c, s) for c in contexts]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_decoding_scores_close_to_float32(dtype):
    """--bf16 / --fp16 on a CPU: the cache and attention bias take the autocast dtype."""
    model = tiny_lm(VOCAB, seed=4, embed_std=0.6).float()
    s = BeamSettings(beam=3, eval_len=10, no_repeat_ngram_size=3, eos_token_ids=(5,))
    contexts = _contexts(seed=2, n=3)
    ref, ref_scores = beam_search(model, contexts, s)
    with torch.autocast("cpu", dtype=dtype):
        got, scores = beam_search(model, contexts, s)
    assert got.shape == ref.shape and torch.isfinite(scores).all()
    assert torch.allclose(scores, ref_scores, rtol=0.02, atol=0.05)


def test_float32_decoding_uses_packed_weights_with_the_same_result(monkeypatch):
    """On a CPU, float32 decoding's products read weights packed once for the whole run
    (loralib.cpu_linear.packed_weights); the hypotheses are those of the unpacked products."""
    from loralib import cpu_linear
    if not cpu_linear._can_pack():
        pytest.skip("this torch cannot reorder a linear weight")
    model = tiny_lm(VOCAB, seed=4, embed_std=0.6).float()
    s = BeamSettings(beam=3, eval_len=10, no_repeat_ngram_size=3, eos_token_ids=(5,))
    contexts = _contexts(seed=2, n=5)
    seen, head = [], model.lm_head

    def recording_head(h):      # what the open packed_weights block holds at each head product
        sc = cpu_linear._scope
        seen.append(None if sc is None else dict(sc["cache"]))
        return head(h)
    monkeypatch.setattr(model, "lm_head", recording_head)
    packed = decode_contexts(model, contexts, s, examples_per_batch=2)
    # three batches, one packing: every weight of the blocks and the tied head, packed on its
    # second product (the first step's; the head's own at the second step) and kept
    n_weights = sum(1 for m in model.modules() if isinstance(m, torch.nn.Linear)) + 1
    assert len(seen) > 3 and all(len(c) == n_weights for c in seen[1:])
    assert all(v[2] is not None for v in seen[-1].values())
    assert all(seen[-1][k][2] is c[k][2] for c in seen[2:] for k in c)
    monkeypatch.setattr(cpu_linear, "_prepack", False)
    seen.clear()
    unpacked = decode_contexts(model, contexts, s, examples_per_batch=2)
    assert seen and all(c is None for c in seen)
    assert packed == unpacked


# ---------------------------------------------------------------------------- the pieces

def test_ngram_ban_matches_loop():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 4):
        hist = torch.randint(0, 5, (6, 9), generator=g)
        logits = torch.randn(6, 5, generator=g)
        want = logits.clone()
        for h in range(6):
            toks = hist[h].tolist()
            for j in range(len(toks) - n + 1):
                if toks[j:j + n - 1] == toks[len(toks) - n + 1:]:
                    want[h, toks[j + n - 1]] = NEG_INF
        ban_repeated_ngrams_(logits, hist, n)
        assert torch.equal(logits, want)


# GPT-2's (29 x 1733), W > 1, W == 1; 67 (prime) and 7 have no divisor in [8, 64]: the flat top-k
@pytest.mark.parametrize("V", [50257, 96, 48, 67, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_top_candidates_equal_the_flat_topk(V, dtype):
    """The column-max shortcut returns torch.topk's scores and indices over K x V candidates,
    also with finished hypotheses (-inf scores: all their candidates -inf) and banned tokens."""
    g = torch.Generator().manual_seed(V)
    n, K = 5, 6
    logp = torch.log_softmax(torch.randn(n * K, V, generator=g, dtype=dtype) * 3, dim=-1)
    logp[torch.rand(n * K, V, generator=g) < 0.05] = NEG_INF            # n-gram bans
    beam_scores = -10 * torch.rand(n, K, generator=g, dtype=dtype)
    beam_scores[1, 0] = beam_scores[3, 2:] = NEG_INF                    # finished hypotheses
    want_s, want_i = (logp.view(n, K, V) + beam_scores.unsqueeze(-1)).view(n, K * V).topk(K, dim=1)
    got_s, got_i = top_candidates(logp.clone(), beam_scores)
    assert torch.equal(got_s, want_s) and torch.equal(got_i, want_i)


def test_top_candidates_with_ties_give_the_same_scores_at_their_indices():
    """Exactly equal scores (low-precision logits): the same sorted scores, and each index
    points at a candidate with its score (their order among equals is unspecified)."""
    n, K, V = 3, 4, 96
    g = torch.Generator().manual_seed(0)
    logp = torch.randint(-3, 0, (n * K, V), generator=g).float()
    beam_scores = torch.zeros(n, K)
    got_s, got_i = top_candidates(logp.clone(), beam_scores)
    flat = (logp.view(n, K, V) + beam_scores.unsqueeze(-1)).view(n, K * V)
    assert torch.equal(got_s, flat.topk(K, dim=1).values)
    assert torch.equal(flat.gather(1, got_i), got_s)
    assert all(len(set(row)) == K for row in got_i.tolist())


def test_gpt2_vocabulary_size_decodes_as_the_reference():
    """V = 50257 takes the column split inside the search: tokens as the reference's."""
    model = tiny_lm(50257, seed=6, embed_std=0.6, n_layer=1, n_embd=16, n_head=2)
    s = BeamSettings(beam=4, eval_len=6, length_penalty=0.8, no_repeat_ngram_size=2, eos_token_ids=(50256, 9))
    contexts = [[5, 17, 300], [40000, 2], [7]]
    got, _ = beam_search(model, contexts, s)
    assert got.tolist() == [reference_beam(model, c, s) for c in contexts]


def test_truncate_and_unique():
    assert truncate_context(list(range(10)), seq_len=8, eval_len=3) == [5, 6, 7, 8, 9]
    assert truncate_context([1, 2], seq_len=8, eval_len=3) == [1, 2]
    with pytest.raises(ValueError, match="seq_len"):
        truncate_context([1], seq_len=4, eval_len=4)
    uniq, inv = unique_contexts([[1, 2], [3], [1, 2], [3], [4]])
    assert uniq == [[1, 2], [3], [4]] and inv == [0, 1, 0, 1, 2]
    plan = batches_by_length([3, 1, 5, 2, 5], 2)
    assert plan == [[2, 4], [0, 3], [1]]
    # a KV-cache budget: examples x beam x (longest + eval_len - 1) positions at most
    assert batches_by_length([3, 1, 5, 2, 5], 3, cache_rows=30, beam=2, eval_len=3) == [[2, 4], [0, 3, 1]]
    assert batches_by_length([3, 1, 5], 3, cache_rows=5, beam=2, eval_len=3) == [[2], [0], [1]]


@pytest.mark.parametrize("N,cap", [(72, 16), (547, 16), (5, 2), (16, 16), (17, 16), (1, 4)])
def test_batches_are_the_fewest_and_even(N, cap):
    """No small last batch: ceil(N / cap) batches whose sizes differ by one at most, every
    context once, each batch's contexts no longer than the previous batch's."""
    lengths = [(7 * j) % 23 + 1 for j in range(N)]
    plan = batches_by_length(lengths, cap)
    sizes = [len(b) for b in plan]
    assert len(plan) == -(-N // cap) and max(sizes) - min(sizes) <= 1 and max(sizes) <= cap
    assert sorted(j for b in plan for j in b) == list(range(N))
    assert all(min(lengths[j] for j in a) >= max(lengths[j] for j in b) for a, b in zip(plan, plan[1:]))


def test_even_batches_keep_the_cache_budget():
    """With a KV-cache budget, random lengths: every context once, no batch over the cap or the
    budget (unless it holds one context), and no more batches than filling each to its limit."""
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        N, cap, beam, E = (int(torch.randint(1, hi, (1,), generator=g)) for hi in (40, 9, 5, 6))
        lengths = torch.randint(1, 30, (N,), generator=g).tolist()
        budget = int(torch.randint(1, 600, (1,), generator=g))
        plan = batches_by_length(lengths, cap, cache_rows=budget, beam=beam, eval_len=E)
        assert sorted(j for b in plan for j in b) == list(range(N))
        for b in plan:
            assert 1 <= len(b) <= cap
            assert len(b) == 1 or len(b) * beam * (max(lengths[j] for j in b) + E - 1) <= budget
        order, greedy, a = sorted(range(N), key=lambda j: (-lengths[j], j)), 0, 0
        while a < N:
            a += max(1, min(cap, budget // (beam * (lengths[order[a]] + E - 1))))
            greedy += 1
        assert len(plan) <= greedy


def test_settings_validation_and_eos_filter():
    assert BeamSettings(eos_token_ids=(50256, 628, 50256)).eos_within(50257) == [50256, 628]
    assert BeamSettings(eos_token_ids=(50256, 7)).eos_within(100) == [7]
    with pytest.raises(ValueError, match="beam"):
        BeamSettings(beam=0)
    with pytest.raises(ValueError, match="empty"):
        beam_search(tiny_lm(VOCAB, seed=0), [[1], []], BeamSettings(eval_len=2))


# ---------------------------------------------------------------------------- no waiting on a GPU

@pytest.mark.parametrize("early_exit", [True, False])
def test_the_step_loop_reads_the_device_only_every_compact_every_steps(peaky, early_exit,
                                                                       monkeypatch):
    """Between two checks the steps queue on a GPU without a host read: over a longer search
    the reads grow by one small read (plus the copy of the kept examples' index) per check, not
    by one per step; the result stays the reference's. (The CPU model plays a GPU's part.)"""
    from host_reads import count_host_reads, total
    from nlg import beam_search as bs
    monkeypatch.setattr(bs, "check_every", lambda device: bs.COMPACT_EVERY)
    contexts = _contexts(seed=5)
    got = {}
    for E in (9, 25):
        s = BeamSettings(beam=3, eval_len=E, no_repeat_ngram_size=3, eos_token_ids=(50256,))
        with count_host_reads() as counts:
            seqs, _ = beam_search(peaky, contexts, s, early_exit=early_exit)
        got[E] = counts
        assert seqs.tolist() == [reference_beam(peaky, c, s) for c in contexts]
    checks = (25 - 2) // bs.COMPACT_EVERY - (9 - 2) // bs.COMPACT_EVERY     # j = 4, 8, ... < E - 1
    grown = total(got[25]) - total(got[9])
    assert 0 < grown <= 2 * checks, (got[9], got[25])
    reads = [k for k in got[25] if k.startswith("read:")]
    assert sum(got[25][k] for k in reads) == (25 - 2) // bs.COMPACT_EVERY, got[25]


def test_on_a_cpu_the_step_loop_checks_after_every_step(peaky):
    """No queue to keep full on a CPU: one host read per step after the first, so examples
    leave and dead positions go as soon as they can; the result stays the reference's."""
    from host_reads import count_host_reads
    from nlg import beam_search as bs
    assert bs.check_every(torch.device("cpu")) == 1
    contexts = _contexts(seed=5)
    s = BeamSettings(beam=3, eval_len=12, no_repeat_ngram_size=3, eos_token_ids=(50256,))
    with count_host_reads() as counts:
        seqs, _ = beam_search(peaky, contexts, s, early_exit=False)
    assert seqs.tolist() == [reference_beam(peaky, c, s) for c in contexts]
    assert sum(counts[k] for k in counts if k.startswith("read:")) == 12 - 2, counts
