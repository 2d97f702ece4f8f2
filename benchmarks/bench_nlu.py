"""NLU speed: RoBERTa-base-shaped LoRA (q, v, r=8) training and evaluation against transformers'
RobertaForSequenceClassification + PEFT, on the same batches in the same process; then every
method's training step time relative to LoRA.

Batches: SST-2 and MRPC train lines (../shared/data/glue), encoded with our RoBERTa tokenizer
(the GPT-2 byte-level BPE files), batch 16, padded to the batch's longest example (at most
--max_len tokens). Random weights (no pretrained model needed); dropout 0.1 in both models.

    python benchmarks/bench_nlu.py [--steps 4] [--eval_batches 4] [--threads 2] [--device cpu]

A train step is forward + backward + AdamW step over the trainable tensors (adapter + head);
ours and transformers+peft alternate step by step, so a busy machine slows both alike.
"""
import argparse
from pathlib import Path

import torch

import loralib as lora
from nlu.glue_data import RobertaTokenizer, encode_examples, load_split
from nlu.roberta import RobertaForSequenceClassification, config_from_card
from common import interleaved, variant_configs

ROOT = Path(__file__).resolve().parents[1]


def make_batches(shared, n, batch_size, max_len):
    tok = RobertaTokenizer(str(shared / "vocab"))
    out = []
    for task in ("sst2", "mrpc"):
        ex = load_split(str(shared / "glue"), task, "train")["train"][: n * batch_size]
        enc = encode_examples(tok, ex, max_len)
        for b in range(0, len(enc) - batch_size + 1, batch_size):
            rows = enc[b:b + batch_size]
            longest = max(len(ids) for ids, _ in rows)
            ids = torch.full((batch_size, longest), tok.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, (x, _) in enumerate(rows):
                ids[i, :len(x)] = torch.tensor(x)
                mask[i, :len(x)] = 1
            out.append((ids, mask, torch.tensor([int(y) for _, y in rows])))
    return out


def ours(device, cfg):
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(config_from_card("roberta-base", num_labels=2,
                                                              method=cfg)).to(device)
    if cfg.is_adapter:
        lora.mark_only_lora_as_trainable(model)
        for p in model.classifier.parameters():
            p.requires_grad = True
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=4e-4)

    def train(b):
        model.train()
        ids, mask, y = (t.to(device) for t in b)
        loss, _ = model(ids, mask, labels=y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def evaluate(b):
        model.eval()
        ids, mask, _ = (t.to(device) for t in b)
        return model(ids, mask).argmax(-1)
    return train, evaluate


def hf_peft(device):
    import peft
    import transformers
    torch.manual_seed(0)
    hc = transformers.RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                                    num_attention_heads=12, intermediate_size=3072,
                                    max_position_embeddings=514, type_vocab_size=1, num_labels=2)
    model = transformers.RobertaForSequenceClassification(hc)
    pc = peft.LoraConfig(r=8, lora_alpha=8, lora_dropout=0.1, target_modules=["query", "value"],
                         task_type="SEQ_CLS")
    model = peft.get_peft_model(model, pc).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=4e-4)

    def train(b):
        model.train()
        ids, mask, y = (t.to(device) for t in b)
        model(input_ids=ids, attention_mask=mask, labels=y).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def evaluate(b):
        model.eval()
        ids, mask, _ = (t.to(device) for t in b)
        return model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
    return train, evaluate


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--steps", type=int, default=4, help="timed train steps per setup")
    ap.add_argument("--eval_batches", type=int, default=4)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--max_len", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no_methods", action="store_true", help="skip the per-method step times")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n = max(args.steps, args.eval_batches) + 1
    batches = make_batches(Path(args.shared), (n + 1) // 2 + 1, args.batch_size, args.max_len)
    train_b, eval_b = batches[:args.steps + 1], batches[:args.eval_batches + 1]
    configs = variant_configs("roberta", 8, 8)
    lora_cfg = variant_configs("roberta", 8, 8, dropout=0.1)["lora"]
    our_train, our_eval = ours(device, lora_cfg)
    hf_train, hf_eval = hf_peft(device)
    t = interleaved({"ours": our_train, "hf+peft": hf_train}, train_b, device)
    e = interleaved({"ours": our_eval, "hf+peft": hf_eval}, eval_b, device)
    tokens = sum(int(b[1].sum()) for b in train_b[1:]) / (len(train_b) - 1)
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"mean tokens/batch {tokens:.0f}, mean padded length "
          f"{sum(b[0].shape[1] for b in batches) / len(batches):.1f}")
    print("| setup | train s/step | train examples/s | eval examples/s |")
    print("|---|---:|---:|---:|")
    for k in ("ours", "hf+peft"):
        print(f"| {k} | {t[k]:.3f} | {args.batch_size / t[k]:.1f} | {args.batch_size / e[k]:.1f} |")
    print(f"ours / hf+peft: training {t['hf+peft'] / t['ours']:.2f}x, "
          f"evaluation {e['hf+peft'] / e['ours']:.2f}x faster")
    if args.no_methods:
        return
    fns = {name: ours(device, cfg)[0] for name, cfg in configs.items()}
    per = interleaved(fns, train_b, device)
    print("| method (roberta defaults, r=8) | train s/step | relative to LoRA |")
    print("|---|---:|---:|")
    for name, sec in per.items():
        print(f"| {name} | {sec:.3f} | {sec / per['lora']:.2f} |")


if __name__ == "__main__":
    main()
