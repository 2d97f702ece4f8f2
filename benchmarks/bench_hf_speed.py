"""Speed of the NLG pipeline on a Hugging Face backbone against transformers' own tools, on the
same model and inputs, in one process (issue 24, item 5).

    python benchmarks/bench_hf_speed.py [--model DIR] [--e2e_dir NLG/data/e2e]
        [--checkpoint model.N.pt] [--steps 4] [--contexts 30] [--threads 1] [--skip train|decode]

training   one optimizer step at batch 8 on real E2E training lines encoded with the model's
           tokenizer (as run_task.sh encodes them), LoRA r=4, alpha 32, dropout 0.1 on q_proj,
           v_proj, fp32:
             ours       gpt2_ft's step: nlg.hf_backbone.HFCausalLM + loralib.inject, the pipeline's
                        loss (logits only at the completion positions, label smoothing 0.1),
                        the pipeline's AdamW;
             hf+peft    AutoModelForCausalLM + peft LoRA (same r, alpha, dropout, targets),
                        labels -100 outside the completion, the model's own loss, torch AdamW;
           the two alternate step by step on the same batches (a busy machine slows both alike);
           one untimed warm-up step each. Reported: steps/s and ours / hf+peft.
decoding   the first --contexts distinct MRs of E2E dev, beam 4, length penalty 0.9, no-repeat
           4-grams, at most 48 new tokens, the tokenizer's end id:
             ours       gpt2_beam's decode (nlg.beam_run: dedup, contexts batched by length, the
                        search's shared-prefix cache filled by the model's attention layers,
                        early exit);
             hf         `generate(num_beams=4, length_penalty=0.9, no_repeat_ngram_size=4,
                        max_new_tokens=48, eos_token_id=..., early_stopping=E)`, left-padded
                        batches of the same size, on the same merged weights held as a
                        transformers user holds them (--hf_model plain: plain nn.Linear
                        layers, as PEFT's merge_and_unload leaves them; --hf_model injected:
                        the pipeline's own model, whose merged adapter layers compute through
                        loralib's oneDNN products even inside generate); E is
                        --hf_early_stopping: false (generate's default: stop when no live
                        hypothesis can beat the finished ones at the current length), true (stop
                        at K finished hypotheses: faster, and it often returns a hypothesis its
                        own score ranks below another it had), never (the exhaustive rule).
           Both decode a trained checkpoint (--checkpoint: the LoRA row of bench_real_e2e.py
           when it exists, so that sentences end as trained ones do) or the base model.
           The outputs are compared token for token; where they differ, both scores are printed
           under each search's own length normalisation: Microsoft's beam search (ours) divides
           a hypothesis' log-probability by ((5 + length) / 6) ** penalty, HF's by
           length ** penalty, so they may rank two finished hypotheses differently.
"""
import argparse
import copy
import json
import os
import random
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import loralib as lora  # noqa: E402
from common import interleaved, padded_batches, peft_step  # noqa: E402

DEFAULT_MODEL = os.path.join(ROOT, "NLG", "pretrained_checkpoints", "SmolLM2-135M-Instruct")
DEFAULT_CKPT = os.path.join(ROOT, "benchmarks", "out", "real_e2e", "runs", "lora", "model.200.pt")
BEAM, LENGTH_PENALTY, NO_REPEAT, EVAL_LEN, SEQ_LEN = 4, 0.9, 4, 48, 128


def encoded(codec, path, n, seed=0, distinct=False):
    """n examples of an E2E *_formatted.jsonl encoded as the pipeline encodes them (context + end
    id, completion + end id); distinct: the first n distinct contexts instead of a seeded draw."""
    rows = [json.loads(x) for x in open(path, encoding="utf8") if x.strip()]
    if distinct:
        seen, out = set(), []
        for r in rows:
            if r["context"] not in seen:
                seen.add(r["context"])
                out.append(r)
        rows = out[:n]
    else:
        rows = random.Random(seed).sample(rows, n)
    return [codec.encode_record(r, True, True) for r in rows]


def batches(records, batch_size, n_batches, tmp):
    path = os.path.join(tmp, "train.jsonl")
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return padded_batches(path, batch_size, SEQ_LEN, n_batches)


def make_ours(spec):
    from nlg.hf_backbone import HFCausalLM
    from nlg.hf_loading import load_model
    from nlg.optimizer import AdamW
    torch.manual_seed(0)
    hf = load_model(spec)
    cfg = lora.MethodConfig(method="lora", r=4, alpha=32, dropout=0.1, pipeline="llm")
    lora.inject(hf, cfg, ["q_proj", "v_proj"])
    model = HFCausalLM(hf).train()
    lora.mark_only_lora_as_trainable(model)
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, betas=(0.9, 0.999),
                eps=1e-6, weight_decay=0.01, correct_bias=True)

    def step(b):
        _, loss = model(b["input"], lm_labels=b["target"], lm_mask=b["mask"], label_smooth=0.1,
                        reduction="sum", loss_positions=b["loss_positions"])
        (loss / b["n_tokens"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, lora.count_parameters(model)[0]


def make_peft(spec):
    import peft
    from nlg.hf_loading import load_model
    torch.manual_seed(0)
    pc = peft.LoraConfig(r=4, lora_alpha=32, lora_dropout=0.1, target_modules=["q_proj", "v_proj"],
                         task_type="CAUSAL_LM")
    model = peft.get_peft_model(load_model(spec), pc).train()
    return peft_step(model), sum(p.numel() for p in model.parameters() if p.requires_grad)


def bench_train(opts, spec, codec):
    path = os.path.join(opts.e2e_dir, "train_formatted.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        bs = batches(encoded(codec, path, 8 * (opts.steps + 1)), 8, opts.steps + 1, tmp)
    fns, counts = {}, {}
    for name, make in (("ours", make_ours), ("hf+peft", make_peft)):
        fns[name], counts[name] = make(spec)
    if counts["ours"] != counts["hf+peft"]:
        raise RuntimeError(f"trainable parameters differ: {counts}")
    secs = interleaved(fns, bs)
    tokens = sum(b["input"].numel() for b in bs[1:]) / len(bs[1:])
    out = {k: {"s_per_step": v, "steps_per_s": 1 / v} for k, v in secs.items()}
    out["ratio"] = secs["hf+peft"] / secs["ours"]
    print(f"training ({counts['ours']:,} trainable, batch 8 x {tokens / 8:.0f} tokens on average, "
          f"{opts.steps} timed steps each): ours {1 / secs['ours']:.3f} steps/s, hf+peft "
          f"{1 / secs['hf+peft']:.3f} steps/s: ours is {out['ratio']:.2f}x", flush=True)
    return out


def hf_generate(hf, contexts, end_ids, pad_id, batch_size, early_stopping=False):
    outs = []
    for a in range(0, len(contexts), batch_size):
        part = contexts[a:a + batch_size]
        T = max(len(c) for c in part)
        ids = torch.full((len(part), T), pad_id, dtype=torch.long)
        mask = torch.zeros(len(part), T, dtype=torch.long)
        for i, c in enumerate(part):
            ids[i, T - len(c):] = torch.tensor(c)
            mask[i, T - len(c):] = 1
        with torch.no_grad():
            gen = hf.generate(input_ids=ids, attention_mask=mask, num_beams=BEAM, do_sample=False,
                              max_new_tokens=EVAL_LEN, length_penalty=LENGTH_PENALTY,
                              no_repeat_ngram_size=NO_REPEAT, eos_token_id=end_ids,
                              pad_token_id=pad_id, early_stopping=early_stopping,
                              num_return_sequences=1,
                              temperature=None, top_p=None, top_k=None)
        for row in gen[:, T:].tolist():
            cut = next((i for i, t in enumerate(row) if t in end_ids), len(row))
            outs.append(row[:cut])
    return outs


def sequence_logprob(hf, context, tokens, end_id):
    """log p(tokens + end | context) under the model."""
    ids = torch.tensor([context + tokens + [end_id]])
    with torch.no_grad():
        logp = torch.log_softmax(hf(ids).logits[0, :-1].double(), -1)
    tgt = ids[0, 1:]
    return float(logp[torch.arange(len(context) - 1, ids.shape[1] - 1), tgt[len(context) - 1:]].sum())


def bench_decode(opts, spec, codec):
    from nlg.backbone import stored_backbone
    from nlg.beam_run import decode, load_model, ready_for_decoding, resolve_method, settings_from_args
    from nlg.gpt2_beam import build_parser
    from nlg.hf_backbone import HFCausalLM
    from nlg.hf_loading import load_model as load_hf
    from traincore import Precision
    recs = encoded(codec, os.path.join(opts.e2e_dir, "valid_formatted.jsonl"), opts.contexts,
                   distinct=True)
    contexts = [r["context"] for r in recs]
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "test.jsonl")
        with open(data, "w") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
        flags = ["--data", data, "--seq_len", str(SEQ_LEN), "--eval_len", str(EVAL_LEN),
                 "--beam", str(BEAM), "--length_penalty", str(LENGTH_PENALTY),
                 "--no_repeat_ngram_size", str(NO_REPEAT), "--work_dir", tmp]
        if opts.checkpoint:
            args = build_parser().parse_args(flags + ["--init_checkpoint", opts.checkpoint])
            record = stored_backbone(opts.checkpoint)
            model, info = load_model(args, resolve_method(args, record), record)
        else:
            args = build_parser().parse_args(flags + ["--eos_token_id", str(codec.eos_id)])
            record = None
            model, info = HFCausalLM(load_hf(spec)).eval(), f"{spec} (base model)"
        s = settings_from_args(args, record) if record else settings_from_args(args)
        ready_for_decoding(model, torch.device("cpu"), Precision.from_flags(False, False, "cpu"))
        hf = model.hf if opts.hf_model == "injected" else \
            lora.merge_and_unload(copy.deepcopy(model.hf))
        end_ids = [codec.eos_id]
        fns = {"ours": lambda: decode(model, contexts, s, args, log=lambda *a: None),
               "hf": lambda: hf_generate(hf, contexts, end_ids, codec.eos_id, len(contexts),
                                         opts.hf_early_stopping)}
        res, outs = {}, {}
        for name in ("ours", "hf", "ours", "hf"):      # each twice, alternating; the second counts
            t0, c0 = time.perf_counter(), time.process_time()
            outs[name] = fns[name]()
            res[name] = {"s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
    ours = [[t for t in p[:next((i for i, t in enumerate(p) if t in end_ids), len(p))]]
            for p in outs["ours"]]
    same = sum(a == b for a, b in zip(ours, outs["hf"]))
    ratio = res["hf"]["s"] / res["ours"]["s"]
    print(f"decoding {len(contexts)} distinct E2E dev MRs ({info}), beam {BEAM}, length penalty "
          f"{LENGTH_PENALTY}, no-repeat {NO_REPEAT}-grams, <= {EVAL_LEN} new tokens: ours "
          f"{res['ours']['s']:.1f} s ({res['ours']['cpu_s']:.1f} CPU-s), HF generate "
          f"{res['hf']['s']:.1f} s ({res['hf']['cpu_s']:.1f} CPU-s, early_stopping="
          f"{opts.hf_early_stopping}, {opts.hf_model} model): ours is {ratio:.2f}x; "
          f"{same} of {len(contexts)} outputs identical", flush=True)
    diffs = []
    for i, (a, b) in enumerate(zip(ours, outs["hf"])):
        if a != b:
            la = sequence_logprob(model.hf, contexts[i], a, codec.eos_id)
            lb = sequence_logprob(model.hf, contexts[i], b, codec.eos_id)
            ms = lambda lp, n: lp / ((5 + n + 1) / 6) ** LENGTH_PENALTY  # noqa: E731
            hs = lambda lp, n: lp / (n + 1) ** LENGTH_PENALTY            # noqa: E731
            diffs.append({"context": i, "ours": codec.decode(a), "hf": codec.decode(b),
                          "logp": [la, lb], "microsoft_score": [ms(la, len(a)), ms(lb, len(b))],
                          "hf_score": [hs(la, len(a)), hs(lb, len(b))]})
            d = diffs[-1]
            print(f"  context {i}: ours {d['ours']!r}\n             hf   {d['hf']!r}\n"
                  f"             log p {la:.3f} / {lb:.3f}; Microsoft's score "
                  f"{d['microsoft_score'][0]:.3f} / {d['microsoft_score'][1]:.3f}; HF's "
                  f"{d['hf_score'][0]:.3f} / {d['hf_score'][1]:.3f}")
    better = sum(d["microsoft_score"][0] >= d["microsoft_score"][1] and
                 d["hf_score"][0] >= d["hf_score"][1] for d in diffs)
    print(f"where they differ ({len(diffs)}), ours scores at least as high under both length "
          f"normalisations in {better}", flush=True)
    return {"contexts": len(contexts), "model": info, "ours": res["ours"], "hf": res["hf"],
            "early_stopping": opts.hf_early_stopping, "hf_model": opts.hf_model,
            "ours_better_under_both": better,
            "ratio": ratio, "identical": same, "differences": diffs}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--e2e_dir", default=os.path.join(ROOT, "NLG", "data", "e2e"))
    p.add_argument("--checkpoint", default=None,
                   help=f"a trained model.<step>.pt to decode (default {DEFAULT_CKPT} when present)")
    p.add_argument("--steps", type=int, default=4, help="timed training steps per setup")
    p.add_argument("--contexts", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip", choices=("train", "decode"), default=None)
    p.add_argument("--hf_early_stopping", default="false", choices=("false", "true", "never"),
                   help="generate's early_stopping (false: its default)")
    p.add_argument("--hf_model", default="plain", choices=("plain", "injected"),
                   help="the model generate runs (see above)")
    p.add_argument("--json", default=None, help="also write the results here")
    opts = p.parse_args(argv)
    opts.hf_early_stopping = {"false": False, "true": True}.get(opts.hf_early_stopping, "never")
    if opts.checkpoint is None and os.path.isfile(DEFAULT_CKPT):
        opts.checkpoint = DEFAULT_CKPT
    torch.set_num_threads(opts.threads)
    from nlg.backbone import parse_hf_spec
    from nlg.hf_tokenizer import HFTextCodec
    spec = parse_hf_spec("hf:" + os.path.abspath(opts.model), "--model")
    codec = HFTextCodec.from_spec("hf:" + os.path.abspath(opts.model), "--model")
    res = {"model": opts.model, "threads": opts.threads, "date": time.strftime("%Y-%m-%d")}
    if opts.skip != "train":
        res["training"] = bench_train(opts, spec, codec)
    if opts.skip != "decode":
        res["decoding"] = bench_decode(opts, spec, codec)
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
