"""Shared pieces of the training tests: tiny token-id data, a tiny published checkpoint, runs."""
import json
import os
import runpy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "NLG" / "src"

# A small vocabulary keeps the LM head cheap; token ids are drawn below it.
TINY_CARD = {"vocab_size": 211, "n_positions": 128, "n_embd": 32, "n_layer": 2, "n_head": 4}


def write_card(folder):
    p = Path(folder) / "tiny_card.json"
    p.write_text(json.dumps(TINY_CARD))
    return str(p)


def write_random_data(path, n, seed=0, vocab=TINY_CARD["vocab_size"], eot=None):
    """Token-id jsonl with E2E-like lengths (context ~ 8-20, completion ~ 5-15, eot-terminated)."""
    g = torch.Generator().manual_seed(seed)
    eot = vocab - 1 if eot is None else eot
    with open(path, "w") as f:
        for _ in range(n):
            lc = int(torch.randint(8, 21, (1,), generator=g))
            lo = int(torch.randint(5, 16, (1,), generator=g))
            ctx = torch.randint(0, vocab - 1, (lc,), generator=g).tolist() + [eot]
            comp = torch.randint(0, vocab - 1, (lo,), generator=g).tolist() + [eot]
            f.write(json.dumps({"context": ctx, "completion": comp}) + "\n")
    return str(path)


def write_backbone(path, card_path, seed=0):
    from nlg.model import GPT2LMModel, config_from_card
    from nlg.checkpoint import export_published
    torch.manual_seed(seed)
    m = GPT2LMModel(config_from_card(card_path))
    with torch.no_grad():  # weights large enough that adapters change the output visibly
        for p in m.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.1)
    export_published(m, path)
    return str(path)


def run_script(script, argv, env=None):
    """Run an NLG/src script as `python src/<script> argv...` would, in this process."""
    old_argv, old_env = sys.argv, dict(os.environ)
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(var, None)
    os.environ.update(env or {})
    sys.argv = [str(SRC / script)] + [str(a) for a in argv]
    try:
        runpy.run_path(str(SRC / script), run_name="__main__")
    finally:
        sys.argv = old_argv
        os.environ.clear()
        os.environ.update(old_env)


def read_log(work_dir, name="train_log.jsonl"):
    with open(Path(work_dir) / name) as f:
        return [json.loads(line) for line in f]


def base_args(tmp, data, card, backbone, work_dir, **over):
    args = {"--train_data": data, "--valid_data": data, "--train_batch_size": 4,
            "--valid_batch_size": 4, "--seq_len": 64, "--model_card": card,
            "--init_checkpoint": backbone, "--lr": 0.01, "--weight_decay": 0.01,
            "--correct_bias": None, "--scheduler": "linear", "--warmup_step": 2,
            "--max_step": 6, "--log_interval": 1, "--eval_interval": 1000,
            "--save_interval": 1000, "--work_dir": work_dir, "--random_seed": 7,
            "--no_progress": None, "--no_tensorboard": None}
    args.update(over)
    out = []
    for k, v in args.items():
        if v is False:
            continue
        out.append(k)
        if v is not None:
            out.append(str(v))
    return out
