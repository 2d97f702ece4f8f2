#!/usr/bin/env python
"""Collect the demo's runs into one table (markdown) and one training-loss plot (PNG).

    python demo/summarize.py --row "LoRA=runs/lora" --row "base (no adapter)=runs/base" \
        --out_md table.md --out_png loss.png

Each --row is LABEL=DIR, where DIR is a run's work_dir. From DIR it reads
  run_info.json     written by gpt2_ft.py (method, trainable/total parameters, final checkpoint,
                    the training's CPU time and peak memory); absent for the un-adapted base row;
  train_log.jsonl   gpt2_ft.py's per-interval {"step", "loss", ...} lines (the loss curves);
  valid_log.jsonl   its {"step", "valid_loss", ...} lines (the validation points), if any;
  scores.json       written by eval/score.py --json.
The adapter file: gpt2_ft.py's final checkpoint holds backbone + adapter, so the adapter tensors
(loralib's lora_* / nola_* entries: for quantized NOLA the packed codes and scales) are written
alone to DIR/adapter.pt and its size is shown; for full fine-tuning it is the whole checkpoint.
Rows whose files are missing stop the run with the path.
"""
import argparse
import json
import math
import os
import sys

# Column label -> keys the scorer may use for it (compared case-insensitively, ignoring - and _).
METRICS = [("BLEU", ("bleu",)), ("NIST", ("nist",)), ("METEOR", ("meteor",)),
           ("ROUGE-L", ("rougel", "rouge_l")), ("CIDEr", ("cider",))]


def _norm(key):
    return key.lower().replace("-", "").replace("_", "")


def find_metric(scores, names):
    flat = {}

    def walk(d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                flat.setdefault(_norm(k), float(v))
    walk(scores)
    for n in names:
        if _norm(n) in flat:
            return flat[_norm(n)]
    return None


def load_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        sys.exit(f"summarize.py: {what} not found: {path}")
    except json.JSONDecodeError as e:
        sys.exit(f"summarize.py: {path}:{e.lineno}: not valid JSON ({e.msg})")


def load_log(path, key="loss"):
    steps, losses = [], []
    if not os.path.isfile(path):
        return steps, losses
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                steps.append(int(rec["step"]))
                losses.append(float(rec[key]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                sys.exit(f"summarize.py: {path}:{n}: expected a json line with 'step' and {key!r} ({e})")
    return steps, losses


ADAPTER_MARKERS = ("lora_", "nola_")  # loralib's adapter parameter names (loralib.is_adapter_key)


def adapter_file_bytes(ckpt, method, run_dir):
    """Size on disk of the trained part alone: DIR/adapter.pt, or the checkpoint for full FT."""
    if method in ("full", "none", None):
        return os.path.getsize(ckpt)
    import torch
    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    sd = obj.get("model_state_dict", obj)
    adapter = {k: v for k, v in sd.items() if any(m in k for m in ADAPTER_MARKERS)}
    if not adapter:
        sys.exit(f"summarize.py: {ckpt} holds no adapter tensors, but run_info.json says method {method!r}")
    path = os.path.join(run_dir, "adapter.pt")
    torch.save(adapter, path)
    return os.path.getsize(path)


def collect(label, run_dir):
    row = {"label": label, "dir": run_dir}
    row["scores"] = load_json(os.path.join(run_dir, "scores.json"), f"scores of row {label!r}")
    info_path = os.path.join(run_dir, "run_info.json")
    info = load_json(info_path, "run_info.json") if os.path.isfile(info_path) else None
    row["info"] = info
    if info is not None:
        try:
            row["trainable"] = info["trainable_params"]
            # CPU time (comparable between runs that shared the cores); older files: wall time
            row["train_cpu"] = info.get("train_cpu_s")
            row["peak_mem"] = info.get("peak_mem_mb")
            ckpt = info["final_checkpoint"]
        except KeyError as e:
            sys.exit(f"summarize.py: {info_path}: no {e.args[0]!r} (not written by gpt2_ft.py?)")
        if ckpt and not os.path.isabs(ckpt) and not os.path.isfile(ckpt):
            ckpt = os.path.join(run_dir, ckpt)
        if not ckpt or not os.path.isfile(ckpt):
            sys.exit(f"summarize.py: final checkpoint of row {label!r} not found: {ckpt} (from {info_path})")
        row["ckpt_bytes"] = adapter_file_bytes(ckpt, info.get("method"), run_dir)
    row["log"] = load_log(os.path.join(run_dir, "train_log.jsonl"))
    row["valid"] = load_log(os.path.join(run_dir, "valid_log.jsonl"), key="valid_loss")
    return row


def human_bytes(n):
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0


def fmt_metric(v, label):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    # The E2E scorers give BLEU, METEOR and ROUGE-L as fractions; papers print them x 100.
    if label in ("BLEU", "METEOR", "ROUGE-L"):
        v *= 100.0
    return f"{v:.2f}" if label not in ("NIST", "CIDEr") else f"{v:.3f}"


def table(rows):
    present = [(lab, keys) for lab, keys in METRICS
               if any(find_metric(r["scores"], keys) is not None for r in rows)]
    head = ["method", "trainable params", "adapter file", "train CPU time", "peak memory"] + \
        [lab for lab, _ in present]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["info"] is None:
            cells = [r["label"], "0", "-", "-", "-"]
        else:
            tr, cpu, mem = r.get("trainable"), r.get("train_cpu"), r.get("peak_mem")
            cells = [r["label"], f"{tr:,}", human_bytes(r.get("ckpt_bytes")),
                     f"{cpu:.1f} s" if isinstance(cpu, (int, float)) else "-",
                     f"{mem:.0f} MB" if isinstance(mem, (int, float)) else "-"]
        cells += [fmt_metric(find_metric(r["scores"], keys), lab) for lab, keys in present]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", [lab for lab, _ in present]


def plot(rows, path):
    """Two panels: every run's training loss with its validation points, then the adapters alone
    on their own scale (full fine-tuning's curve would squeeze them together)."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # no display on servers / CI
        import matplotlib.pyplot as plt
    except ImportError:
        print("summarize.py: matplotlib is not installed, so no loss plot was drawn "
              "(pip install matplotlib); the table and TensorBoard logs are complete.")
        return False
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    adapters = [r for r in rows if r["info"] is not None
                and r["info"].get("method") not in ("full", "none", None)]
    color = {r["label"]: f"C{i % 10}" for i, r in enumerate(rows)}   # the same in both panels
    for ax, subset, title in ((axes[0], rows, "every run"), (axes[1], adapters, "adapters only")):
        drawn = 0
        for r in subset:
            steps, losses = r["log"]
            if not steps:
                continue
            ax.plot(steps, losses, label=r["label"], linewidth=1.5, color=color[r["label"]])
            vs, vl = r["valid"]
            if vs:
                ax.plot(vs, vl, linestyle="--", marker="o", markersize=4, color=color[r["label"]])
            drawn += 1
        ax.set_xlabel("step")
        # the training loss includes the label smoothing (0.1 in E2E), the validation loss not
        ax.set_ylabel("loss: training (solid, label-smoothed), validation (dashed)")
        ax.set_title(f"Demo: {title}")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", action="append", required=True, metavar="LABEL=DIR")
    ap.add_argument("--out_md", required=True)
    ap.add_argument("--out_png", default=None)
    ap.add_argument("--title", default=None, help="heading line above the table in the markdown file")
    ap.add_argument("--note", action="append", default=[],
                    help="a line below the table (e.g. the decoding settings every row used)")
    args = ap.parse_args(argv)
    rows = []
    for spec in args.row:
        if "=" not in spec:
            ap.error(f"--row {spec!r}: expected LABEL=DIR")
        label, run_dir = spec.split("=", 1)
        rows.append(collect(label, run_dir))
    text, metrics = table(rows)
    with open(args.out_md, "w", encoding="utf-8") as f:
        if args.title:
            f.write(f"{args.title}\n\n")
        f.write(text)
        f.writelines(f"\n{n}\n" for n in args.note)
    print(text, end="")
    for n in args.note:
        print(n)
    if "METEOR" not in metrics:
        print("(no METEOR column: the scorer found no Java runtime)")
    if args.out_png and plot(rows, args.out_png):
        print(f"loss curves: {args.out_png}")


if __name__ == "__main__":
    main()
