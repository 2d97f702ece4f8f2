"""Is a downloaded or converted causal LM right? Its perplexity on plain English text against a
model of the same shape with random weights (download_pretrained_checkpoints.sh --models smollm2
converts a GGUF file: a wrong conversion scores like the random model, a right one far lower).

    python benchmarks/check_causal_lm.py [MODEL_DIR] [--text FILE] [--threads 2]

MODEL_DIR defaults to NLG/pretrained_checkpoints/SmolLM2-135M-Instruct. The text defaults to the
paragraphs below (written for this check, so no model has seen them). Prints the parameter count,
the number of tokens scored, and both perplexities.
"""
import argparse
import math
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

TEXT = """\
The river runs slowly through the middle of the old town, and on summer evenings people sit on
the stone steps near the bridge to watch the boats go by. Most of the houses along the water were
built more than two hundred years ago, when the town was a busy market for wool and grain. Today
the warehouses have become shops, cafes and small museums, but the narrow streets still follow
the paths that carts once took from the docks to the square.

Every Saturday morning a market fills the square with stalls selling bread, cheese, vegetables
and flowers. Farmers from the surrounding villages arrive before dawn to set up their tables, and
by eight o'clock the first customers are already walking between the rows with baskets on their
arms. Children buy apples and honey cakes, while their parents compare the prices of potatoes and
talk with neighbours they have not seen all week.

In the afternoon the market closes and the square becomes quiet again. A few tourists take
photographs of the church tower, which leans slightly to one side because the ground beneath it is
soft. According to a local story, the builders noticed the problem halfway through the work and
decided to finish the tower anyway, adding a heavy bell at the top to keep it from falling over.
Engineers who studied the tower last year found that it has not moved for at least a century.

When the sun goes down, the lights along the river are switched on one by one. The restaurants
near the water put tables outside, and the smell of grilled fish and fresh bread drifts across the
bridge. It is the best time to walk through the town, when the heat of the day has gone and the
streets are full of quiet conversation.
"""


def perplexity(model, ids):
    with torch.no_grad():
        return math.exp(model(ids, labels=ids).loss.item())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", nargs="?", default=str(ROOT / "NLG/pretrained_checkpoints/SmolLM2-135M-Instruct"))
    ap.add_argument("--text", help="a UTF-8 text file to score instead of the built-in paragraphs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seed of the random model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    text = Path(args.text).read_text(encoding="utf8") if args.text else TEXT
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir).eval()
    load_s = time.perf_counter() - t0
    ids = tok(text, return_tensors="pt").input_ids
    torch.manual_seed(args.seed)
    random_model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.model_dir)).eval()
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.model_dir}: {type(model).__name__}, {n:,} parameters, loaded in {load_s:.1f} s")
    print(f"text: {len(text.split())} words, {ids.shape[1]} tokens")
    print(f"perplexity: {perplexity(model, ids):.2f} (random weights of the same shape: "
          f"{perplexity(random_model, ids):.0f}; vocabulary {model.config.vocab_size:,})")


if __name__ == "__main__":
    main()
