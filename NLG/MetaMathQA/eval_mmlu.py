"""MMLU accuracy of a causal LM (optionally with a loralib / PEFT LoRA adapter), as QLoRA's
qlora.py --do_mmlu_eval computes it (the metric of NOLA's LLaMA-2 table).

    python eval_mmlu.py --model_name_or_path meta-llama/Llama-2-7b-hf [--adapter DIR] \
        --mmlu_dataset mmlu-fs --mmlu_split test --data_dir data/mmlu --output results.json

The tokenizer is loaded as qlora.py loads it (right padding, the slow tokenizer unless
--use_fast_tokenizer) and gets a [PAD] token, with input and output embeddings at the mean of
the others, when it has none. Prints the mean accuracy over subjects and writes a JSON file with
qlora.py's logged values (mmlu_loss, mmlu_<split>_accuracy, one accuracy per subject), the
per-row predictions and the settings.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.append(os.path.dirname(os.path.dirname(HERE)))   # traincore from an uninstalled checkout
import mmlu  # noqa: E402
from traincore import cli  # noqa: E402

DTYPES = ("auto", "float32", "bfloat16", "float16")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_name_or_path", required=True, help="hub id or local folder")
    p.add_argument("--adapter", default=None,
                   help="adapter folder (loralib's save_adapter, or PEFT LoRA) to load first")
    p.add_argument("--mmlu_dataset", default="mmlu-fs", choices=mmlu.DATASETS,
                   help="mmlu-zs: zero-shot; mmlu-fs (mmlu): five-shot (qlora.py's default)")
    p.add_argument("--mmlu_split", default="eval", choices=sorted(mmlu.SPLITS),
                   help="eval (= val) or test; NOLA's scripts use test")
    p.add_argument("--data_dir", default="data/mmlu", help="folder of QLoRA's MMLU json files")
    p.add_argument("--max_mmlu_samples", type=int, default=None,
                   help="only the file's first N rows")
    p.add_argument("--mmlu_source_max_len", type=int, default=mmlu.DEFAULT_SOURCE_MAX_LEN,
                   help="source truncation length in tokens (BOS included)")
    p.add_argument("--batch_size", type=int, default=1,
                   help="rows per forward (NOLA's scripts: per_device_eval_batch_size 1)")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="model weights: auto = bfloat16 on a GPU, float32 on a CPU")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--use_fast_tokenizer", action="store_true",
                   help="the fast tokenizer (qlora.py loads the slow one)")
    p.add_argument("--output", default=None,
                   help="results JSON (default: <adapter or model folder>/mmlu_<dataset>_<split>"
                        "_results.json)")
    cli.setup_parser(p)
    return p


def output_path(args) -> str:
    if args.output:
        return args.output
    folder = args.adapter or args.model_name_or_path
    if not os.path.isdir(folder):
        raise ValueError(f"--output is needed: {folder} is not a local folder to write into")
    return os.path.join(folder, f"mmlu_{args.mmlu_dataset}_{args.mmlu_split}_results.json")


def load(args):
    import torch
    import transformers
    from model_check import check_model
    check_model(args.model_name_or_path, "--model_name_or_path")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype != "auto" else (
        "bfloat16" if device.startswith("cuda") else "float32")
    tok = transformers.AutoTokenizer.from_pretrained(args.model_name_or_path,
                                                     padding_side="right",
                                                     use_fast=args.use_fast_tokenizer)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        args.model_name_or_path, dtype=getattr(torch, dtype))
    try:
        import loralib
    except ImportError:       # a checkout without `pip install -e .`
        sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
        import loralib
    import llm_trainer
    if tok.pad_token is None:
        llm_trainer.add_pad_token(tok, model)     # qlora.py 442-462: [PAD], mean embeddings
    if args.adapter:
        loralib.load_adapter(model, args.adapter)
    return tok, model.to(device)


def _main(argv=None):
    args = build_parser().parse_args(argv)
    path = mmlu.mmlu_path(args.data_dir, args.mmlu_dataset, args.mmlu_split)
    rows = mmlu.read_mmlu(path, args.max_mmlu_samples)
    out_path = output_path(args)
    tok, model = load(args)
    run = mmlu.evaluate(model, tok, rows, split=args.mmlu_split, batch_size=args.batch_size,
                        source_max_len=args.mmlu_source_max_len, progress=True)
    results = run["results"]
    split = mmlu.split_name(args.mmlu_split)
    if run["truncated_sources"]:
        print(f"warning: {run['truncated_sources']} of {len(rows)} sources are longer than "
              f"--mmlu_source_max_len {args.mmlu_source_max_len} and lost their end",
              file=sys.stderr)
    print(f"mmlu_{split}_accuracy {results[f'mmlu_{split}_accuracy']:.4f} "
          f"({len(rows)} rows, {len({r['subject'] for r in rows})} subjects), "
          f"mmlu_loss {results['mmlu_loss']:.4f}")
    report = {**mmlu.record(rows, run, dataset=args.mmlu_dataset, split=args.mmlu_split,
                            data_file=path),
              "results": results, "rows": len(rows),
              "settings": {k: v for k, v in vars(args).items() if k != "output"},
              "predictions": [{"subject": r["subject"], "answer": r["output"],
                               "predicted": mmlu.LETTERS[p]}
                              for r, p in zip(rows, run["predictions"])]}
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, out_path)
    return results


def main(argv=None):
    """_main with bad input and Ctrl-C reported as one line (exit 2 / 130; traincore.cli)."""
    return cli.run("eval_mmlu.py", _main, argv)


if __name__ == "__main__":
    main()
