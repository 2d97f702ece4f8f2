"""Decoding and device parity for benchmarks/gpu_check.py.

parity: one GPT-2 (M on a GPU; LoRA adapters set to random values so that they count) on the CPU
and on the GPU, fp32 on both (no TF32): the step-0 training loss and the adapters' gradients on
one E2E-shaped batch, and beam-10 predictions on a dozen contexts, merged as gpt2_beam.py merges
(on the device). Without a GPU the second side is the CPU with torch's products instead of
loralib's oneDNN ones (the code runs, the GPU comparison is reported skipped).

decode: beam 10 (length penalty 0.8, no-repeat n-gram 4, end ids 50256 and 628, eval_len 64) on
630 distinct E2E-like contexts (E2E test's count of MRs): gpt2_beam's decoder in fp32 and in
bf16 (merged, then cast once), and Hugging Face `generate` on the same weights and contexts in
fp32 and bf16: lines/s, speed-up, and how often the two agree (the decoders differ on purpose:
ours is Microsoft's search step for step, HF's stops beams by its own rules and bans n-grams
over the context too, so agreement is a figure, not a pass mark).
"""
import copy
import time

import torch

from gpu_check_core import EOS, Setting, distinct_contexts, e2e_examples
from gpu_check_train import make_batches

END_IDS = (EOS, 628)


def lora_model(card):
    """GPT-2 with LoRA (r=4, q and v) whose adapters are random (B is zero at init: the adapter
    would add nothing to compare), on the CPU, in eval mode (no dropout)."""
    import loralib as lora
    from nlg.model import GPT2LMModel, config_from_card
    torch.manual_seed(11)
    model = GPT2LMModel(config_from_card(card, method=lora.MethodConfig(method="lora", r=4, alpha=32)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.02)
    lora.mark_only_lora_as_trainable(model)
    return model.eval()


def beam_args(eval_len, beam=10, *extra):
    from nlg.gpt2_beam import build_parser
    return build_parser().parse_args([
        "--data", "unused", "--beam", str(beam), "--eval_len", str(eval_len), "--seq_len", "512",
        "--length_penalty", "0.8", "--no_repeat_ngram_size", "4", "--eos_token_id", "628", *extra])


def decode(model, contexts, args, device, dtype):
    """gpt2_beam's decoding of a model already on its device, merged and cast (ready_for_decoding)."""
    from nlg import beam_run
    with torch.no_grad(), beam_run.cpu_products(device, dtype, False):
        return beam_run.decode(model, contexts, beam_run.settings_from_args(args), args,
                               log=lambda *a: None)


def ready(model, device, precision_name):
    from nlg import beam_run
    from traincore import Precision
    precision = Precision.from_flags(False, precision_name == "bf16", device)
    precision.apply()
    beam_run.ready_for_decoding(model, device, precision)
    return model


def text(ids):
    """A prediction up to its first end id (ours pads with zeros after it, HF with 50256)."""
    out = []
    for t in ids:
        if t in END_IDS:
            break
        out.append(int(t))
    return out


# ----------------------------------------------------------------------------------------------

def check_parity(setting: Setting, part):
    card = setting.card("gpt2.md")
    cpu = lora_model(card)
    if setting.gpu:
        other, where = copy.deepcopy(cpu).to(setting.device), f"GPU ({setting.name})"
    else:
        other, where = copy.deepcopy(cpu), "CPU with torch's products"
        setting.skip("GPU-vs-CPU parity: no GPU (the CPU's oneDNN products against torch's "
                     "instead)")
    torch.set_float32_matmul_precision("highest")
    batch = make_batches("8xE2E", 1, setting, pin=False)[0]
    card = setting.card_name(card)

    def loss_and_grads(model, device):
        model.zero_grad(set_to_none=True)
        b = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        _, loss = model(b["input"], lm_labels=b["target"], lm_mask=b["mask"],
                        loss_positions=b["loss_positions"])
        loss.backward()
        grads = torch.cat([p.grad.reshape(-1).cpu() for p in model.parameters() if p.grad is not None])
        return loss.item(), grads

    loss_a, grad_a = loss_and_grads(cpu, torch.device("cpu"))
    loss_b, grad_b = loss_and_grads(other, setting.device)
    rel_loss = abs(loss_a - loss_b) / abs(loss_a)
    rel_grad = ((grad_a - grad_b).norm() / grad_a.norm()).item()
    part.verdict(f"parity {card} step-0 loss fp32: CPU vs {where}",
                 rel_loss < 2e-5 and rel_grad < 1e-4,
                 f"loss {loss_a:.6f} vs {loss_b:.6f} (relative {rel_loss:.1e}), adapter gradients "
                 f"relative {rel_grad:.1e}",
                 "above 2e-5 (loss) / 1e-4 (gradients): not the same fp32 computation (TF32 on?)",
                 loss_cpu=loss_a, loss_other=loss_b, rel_loss=rel_loss, rel_grad=rel_grad)

    contexts = [c for c, _ in e2e_examples(12, seed=10, vocab=setting.vocab)]
    args = beam_args(setting.pick(32, tiny=16))
    ready(cpu, torch.device("cpu"), "fp32")
    ready(other, setting.device, "fp32")
    preds_a = decode(cpu, contexts, args, torch.device("cpu"), None)
    if setting.gpu:
        preds_b = decode(other, contexts, args, setting.device, None)
    else:
        from loralib import cpu_linear
        was = cpu_linear._enabled
        cpu_linear.set_enabled(False)
        try:
            preds_b = decode(other, contexts, args, setting.device, None)
        finally:
            cpu_linear.set_enabled(was)
    same = sum(a == b for a, b in zip(preds_a, preds_b))
    # one flip allowed: on a random model a near-tie can go either way with another sum order
    part.verdict(f"parity {card} beam 10 on {len(contexts)} contexts: CPU vs {where}",
                 same >= len(contexts) - 1, f"{same}/{len(contexts)} predictions equal",
                 "more than one context decoded differently", same=same, contexts=len(contexts))


# ----------------------------------------------------------------------------------------------

def hf_twin(model):
    """Hugging Face's GPT2LMHeadModel with this (merged) model's weights, on its device, checked
    to give its logits."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from nlg.checkpoint import backbone_state_dict
    c = model.config
    device = next(model.parameters()).device
    with torch.device(device):           # GPT-2 M's random init on the GPU, overwritten below
        hf = GPT2LMHeadModel(GPT2Config(
            vocab_size=c.vocab_size, n_positions=c.n_positions, n_embd=c.n_embd,
            n_layer=c.n_layer, n_head=c.n_head, layer_norm_epsilon=c.layer_norm_epsilon,
            activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    missing, unexpected = hf.transformer.load_state_dict(backbone_state_dict(model), strict=False)
    if unexpected or any(not k.endswith(("attn.bias", "attn.masked_bias")) for k in missing):
        raise RuntimeError(f"weights do not map onto HF GPT-2: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    hf.eval()
    probe = torch.tensor([[464, 329, 318, 257, 133]], device=device)
    with torch.no_grad():
        diff = (hf(probe).logits - model(probe)[0]).abs().max().item()
    if diff > 1e-3:
        raise RuntimeError(f"HF logits differ from ours by {diff}: not the same model")
    return hf


def hf_generate(hf, contexts, eval_len, per_batch, device):
    vocab = hf.config.vocab_size
    pad = min(EOS, vocab - 1)
    out = []
    with torch.no_grad():
        for a in range(0, len(contexts), per_batch):
            batch = contexts[a:a + per_batch]
            T = max(len(x) for x in batch)
            ids = torch.full((len(batch), T), pad, dtype=torch.long)
            mask = torch.zeros(len(batch), T, dtype=torch.long)
            for b, x in enumerate(batch):                    # left-padded, as generate wants
                ids[b, T - len(x):] = torch.tensor(x)
                mask[b, T - len(x):] = 1
            seqs = hf.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                               num_beams=10, do_sample=False, max_new_tokens=eval_len,
                               length_penalty=0.8, no_repeat_ngram_size=4,
                               eos_token_id=[t for t in END_IDS if t < vocab], pad_token_id=pad,
                               num_return_sequences=1)
            out += seqs[:, T:].tolist()
    return out


def _timed(setting, fn, *args):
    setting.sync()
    t0 = time.perf_counter()
    out = fn(*args)
    setting.sync()
    return out, time.perf_counter() - t0


def check_decode(setting: Setting, part):
    card = setting.card("gpt2.md")
    n = setting.pick(630, quick=120, tiny=16)
    eval_len = setting.pick(64, tiny=12)
    contexts, real = distinct_contexts(n, vocab=setting.vocab)
    source = f"{real} E2E valid MRs + {n - real} synthesized" if real else "synthesized"
    if not setting.gpu:
        setting.skip(f"decoding 630 contexts with GPT-2 M: no GPU (the toy model, {n} contexts, "
                     f"eval_len {eval_len})")
    # merged on the device in fp32, then (bf16) cast once: what gpt2_beam --bf16 decodes
    model = ready(lora_model(card), setting.device, "fp32")
    hf = hf_twin(model)
    card = setting.card_name(card)
    args = beam_args(eval_len)
    ours = {}
    for prec in ("fp32", "bf16"):
        name = f"decode {card} {n} contexts beam 10 {prec}: ours vs HF generate"
        if part.left() < 5:
            part.skipped(name, "the part's time budget is spent")
            continue
        dtype = torch.bfloat16 if prec == "bf16" else None
        if dtype is not None:
            model, hf = model.to(dtype), hf.to(dtype)
        if setting.gpu:
            torch.cuda.reset_peak_memory_stats(setting.device)
        preds, ours_s = _timed(setting, decode, model, contexts, args, setting.device, dtype)
        ours[prec] = preds
        data = {"contexts": n, "context_source": source, "eval_len": eval_len, "ours_s": ours_s}
        if setting.gpu:
            data["peak_mem_gb"] = torch.cuda.max_memory_allocated(setting.device) / 2 ** 30
        hf_preds, hf_s = _timed(setting, hf_generate, hf, contexts, eval_len,
                                setting.pick(64, tiny=8), setting.device)
        agree = sum(text(a) == text(b) for a, b in zip(preds, hf_preds))
        figure = (f"ours {n / ours_s:.1f} lines/s ({ours_s:.1f} s), HF {n / hf_s:.1f} lines/s "
                  f"({hf_s:.1f} s): {hf_s / ours_s:.1f}x; same text as HF on {agree}/{n}")
        data.update(hf_s=hf_s, speedup_vs_hf=hf_s / ours_s, agree_with_hf=agree)
        if prec == "bf16" and "fp32" in ours:
            same = sum(text(a) == text(b) for a, b in zip(preds, ours["fp32"]))
            figure += f"; bf16 = fp32 on {same}/{n}"
            data["agree_with_fp32"] = same
        part.verdict(name, len(preds) == len(hf_preds) == n and all(len(p) == eval_len for p in preds),
                     figure, "not every context was decoded", **data)
