"""Every method fine-tuning a real pretrained LM on real E2E, one table (issue 24, item 4).

    python benchmarks/bench_real_e2e.py [--model DIR] [--e2e_dir NLG/data/e2e]
        [--eval_file FILE] [--eval_mrs 100] [--steps 200] [--jobs 2]
        [--methods lora,lorma_plus,...] [--work_dir benchmarks/out/real_e2e] [--force]

Each row is the method's own E2E task script (NLG/scripts/e2e_<variant>.sh: its learning rate,
weight decay, dropout, rank and scale, with the paper or official script each comes from) run
through the whole pipeline (encode with the model's tokenizer -> gpt2_ft -> gpt2_beam ->
gpt2_decode -> the E2E scorers) on the Hugging Face backbone --model. Every row gets the same
schedule, batch and decoding, overriding the scripts' (which are for 5 epochs on GPT-2):

  --steps steps of batch 8 on --steps x 8 training lines drawn once (seeded) from the E2E train
  split (one pass, no line twice), linear warm-up over the first tenth then linear decay to 0 (the
  LoRA paper's schedule shape, compressed), sequences cut at 128 tokens; then beam 4, length
  penalty 0.9, no-repeat 4-grams, at most 48 new tokens (the LoRA paper's E2E decoding except
  beam 10 -> 4 for time), on --eval_mrs distinct MRs drawn (seeded) from --eval_file, scored
  against all their references.

The base row is the same model untrained (a LoRA adapter with B = 0, so exactly the base model),
asked in its own chat format when its tokenizer has a chat template (the user turn holds an
instruction, BASE_INSTRUCTION, and the MR; the pipeline's separator, the end-of-sequence token,
closes the turn; the assistant header the model then writes is removed before scoring), because
it has never seen the MR notation; every other row sees the bare MR, as in the papers. The
learning rates are the scripts': nothing here was tuned, on the evaluation file or otherwise.

Rows run --jobs at a time, each one process on one thread (OMP_NUM_THREADS=1). A finished row is
reused by a second call with the same settings (run_task.sh's stamps); --force redoes all. The
table (markdown and CSV) goes to WORK_DIR/table.{md,csv} and is printed.
"""
import argparse
import csv
import io
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "NLG", "scripts")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "NLG"))

BATCH = 8
# Decoding and sequence settings every row shares (run_task.sh's environment variables).
SHARED = {"TRAIN_BATCH_SIZE": str(BATCH), "VALID_BATCH_SIZE": str(BATCH), "SEQ_LEN": "128",
          "BEAM": "4", "LENGTH_PENALTY": "0.9", "NO_REPEAT_NGRAM_SIZE": "4", "EVAL_LEN": "48",
          "BEAM_BATCH_SIZE": "40", "MAX_EPOCH": "1000", "SAVE_INTERVAL": "1000000",
          "PRECISION": "fp32", "SEED": "110"}
DEFAULT_METHODS = "lora,lorma_plus,lorma_pi,mtlora_icfm,nola,qnola,ft"
BASE_INSTRUCTION = "Write one sentence describing this restaurant: "
SCORES = (("BLEU", "BLEU", 100), ("NIST", "NIST", 1), ("METEOR", "METEOR", 100),
          ("ROUGE-L", "ROUGE_L", 100), ("CIDEr", "CIDEr", 1))


def read_examples(path):
    """(context, completion) pairs of an E2E file: a *_formatted.jsonl or Microsoft's
    `MR||REF` line format (.txt). Errors name the file and line."""
    out = []
    with open(path, encoding="utf8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            if path.endswith(".jsonl"):
                try:
                    rec = json.loads(line)
                    out.append((rec["context"], rec["completion"]))
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{path}:{i}: expected {{\"context\": ..., \"completion\": ...}} ({e})")
            else:
                from nlg.format_converting_e2e import convert_line
                rec = convert_line(line, path, i)
                out.append((rec["context"], rec["completion"]))
    if not out:
        raise ValueError(f"{path}: no examples")
    return out


def eval_slice(examples, n_mrs, seed=0):
    """Every line of n_mrs distinct MRs drawn with a seeded generator, in file order."""
    mrs = list(dict.fromkeys(c for c, _ in examples))
    if n_mrs > len(mrs):
        raise ValueError(f"--eval_mrs {n_mrs}: the file has {len(mrs)} distinct MRs")
    keep = set(random.Random(seed).sample(mrs, n_mrs))
    return [(c, r) for c, r in examples if c in keep]


def train_slice(examples, n_train, n_valid, seed=0):
    """n_train + n_valid distinct lines drawn once; the validation lines (only needed by the
    pipeline's end-of-training loss) are training lines too, never the evaluation file's."""
    if n_train + n_valid > len(examples):
        raise ValueError(f"{n_train} training + {n_valid} validation lines asked, the train split "
                         f"has {len(examples)}")
    drawn = random.Random(seed).sample(examples, n_train + n_valid)
    return drawn[:n_train], drawn[n_train:]


def write_jsonl(path, pairs):
    """Rewrite only when the text changes (run_task.sh's stamps then keep finished stages)."""
    text = "".join(json.dumps({"context": c, "completion": r}) + "\n" for c, r in pairs)
    if not os.path.isfile(path) or open(path, encoding="utf8").read() != text:
        with open(path, "w", encoding="utf8") as f:
            f.write(text)


def chat_framing(model):
    """(prefix, header) from the model's chat template: the text before a user turn's content
    (a system turn included) and the assistant header that follows the turn; ("", "") without a
    template."""
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(model)
    if not getattr(tok, "chat_template", None):
        return "", ""
    mark = "\x00content\x00"
    turn = [{"role": "user", "content": mark}]
    user = tok.apply_chat_template(turn, tokenize=False)
    full = tok.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    return user.split(mark)[0], full[len(user):] if full.startswith(user) else ""


def build_data(args):
    """WORK_DIR/data (the methods' rows) and WORK_DIR/data_base (the same, each MR in a chat
    turn after an instruction)."""
    train = read_examples(os.path.join(args.e2e_dir, "train_formatted.jsonl"))
    tr, va = train_slice(train, args.steps * BATCH, 16)
    te = eval_slice(read_examples(args.eval_file), args.eval_mrs)
    dirs = {}
    for name, prefix in (("data", ""), ("data_base", args.chat_prefix + BASE_INSTRUCTION)):
        d = os.path.join(args.work_dir, name)
        os.makedirs(d, exist_ok=True)
        for split, pairs in (("train", tr), ("valid", va), ("test", te)):
            write_jsonl(os.path.join(d, f"{split}_formatted.jsonl"), [(prefix + c, r) for c, r in pairs])
        dirs[name] = d
    return dirs, len(te), len({c for c, _ in te})


def row_env(name, steps):
    env = dict(SHARED, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if name == "base":      # one step at learning rate 0: LoRA's B stays 0, the model is the base
        env.update(LR="0", MAX_STEP="1", WARMUP_STEP="0")
    else:
        env.update(MAX_STEP=str(steps), WARMUP_STEP=str(max(1, steps // 10)))
    env["EXTRA_FT_ARGS"] = "--eval_interval 1000000 --log_interval 10 --no_tensorboard"
    return env


def script_of(name):
    path = os.path.join(SCRIPTS, f"e2e_{'lora' if name == 'base' else name}.sh")
    if not os.path.isfile(path):
        have = sorted(f[4:-3] for f in os.listdir(SCRIPTS) if f.startswith("e2e_") and f.endswith(".sh"))
        raise ValueError(f"--methods: no script {path} (variants: {', '.join(have)})")
    return path


def script_lr(path):
    """The learning rate line of a task script and its cited source."""
    with open(path, encoding="utf8") as f:
        for line in f:
            if line.startswith(': "${LR:='):
                value = line.split(":=", 1)[1].split("}", 1)[0]
                return value, line.split("#", 1)[1].strip() if "#" in line else ""
    raise ValueError(f"{path}: no LR line")


def run_row(name, args, dirs):
    work = os.path.join(args.work_dir, "runs", name)
    os.makedirs(work, exist_ok=True)
    cmd = ["bash", script_of(name), "--backbone", f"hf:{args.model}", "--launcher", "python",
           "--data_dir", dirs["data_base" if name == "base" else "data"], "--work_dir", work]
    if args.force:
        cmd.append("--force")
    env = dict(os.environ, **row_env(name, args.steps))
    log = os.path.join(args.work_dir, f"{name}.log")
    t0 = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] {name}: started ({log})", flush=True)
    with open(log, "a", encoding="utf8") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.time() - t0
    if proc.returncode != 0:      # the other rows go on; the table names this one
        with open(log, encoding="utf8") as f:
            tail = "".join(f.readlines()[-15:])
        print(f"[{time.strftime('%H:%M:%S')}] {name}: FAILED (exit {proc.returncode}); the end of "
              f"{log}:\n{tail}", flush=True)
        return {"name": name, "work": work, "failed": log}
    if name == "base" and args.chat_header.strip():
        score_answers(work, args.chat_header.strip(), env)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: done in {wall:.0f} s", flush=True)
    return {"name": name, "work": work}


def score_answers(work, header, env):
    """The base model's sentences without the chat header it writes first (e2e_answers.txt),
    scored as run_task.sh scores (answers_scores.json, which the table reads for this row)."""
    with open(os.path.join(work, "e2e_pred.txt"), encoding="utf8") as f:
        preds = f.read().splitlines()
    answers = [p[len(header):].strip() if p.startswith(header) else p for p in preds]
    with open(os.path.join(work, "e2e_answers.txt"), "w", encoding="utf8") as f:
        f.write("".join(a + "\n" for a in answers))
    subprocess.run([sys.executable, os.path.join(ROOT, "NLG", "eval", "score.py"), "--task", "e2e",
                    "--ref", os.path.join(work, "e2e_ref.txt"), "--hyp",
                    os.path.join(work, "e2e_answers.txt"), "--json",
                    os.path.join(work, "answers_scores.json")],
                   env=env, check=True, stdout=subprocess.DEVNULL)


def human_bytes(n):
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def row_record(res):
    """One table row from a finished run folder (nlg.run_records reads what the run wrote)."""
    from nlg.run_records import read_run
    if res.get("failed"):
        return {"row": f"{res['name']}: FAILED (see {res['failed']})"}
    run = read_run(res["work"])
    info = json.load(open(os.path.join(res["work"], "run_info.json"), encoding="utf8"))
    base = res["name"] == "base"
    answers = os.path.join(res["work"], "answers_scores.json")
    scores = json.load(open(answers if base and os.path.isfile(answers)
                            else os.path.join(res["work"], "scores.json"), encoding="utf8"))
    lr, source = script_lr(script_of(res["name"]))
    rec = {"row": "base model (untrained, asked in its chat format)" if base else res["name"],
           "lr": "-" if base else lr, "lr source": "" if base else source,
           "trainable": 0 if base else run.trainable_params,
           "adapter": 0 if base else run.adapter_bytes,
           "train wall s": None if base else info["train_time_s"],
           "train CPU s": None if base else info["train_cpu_s"],
           "peak MB": info["peak_mem_mb"]}
    for col, key, mult in SCORES:
        v = scores.get(key)
        rec[col] = None if not isinstance(v, (int, float)) else v * mult
    return rec


def tables(records):
    cols = ["row", "lr", "trainable", "adapter", "train wall s", "train CPU s", "peak MB",
            "BLEU", "NIST", "METEOR", "ROUGE-L", "CIDEr"]

    def cell(rec, c):
        v = rec.get(c)
        if v is None:
            return "-"
        if c == "trainable":
            return f"{v:,}"
        if c == "adapter":
            return human_bytes(v) if v else "-"
        if c in ("train wall s", "train CPU s", "peak MB"):
            return f"{v:,.0f}"
        if c in ("NIST", "CIDEr"):
            return f"{v:.2f}"
        if isinstance(v, float):
            return f"{v:.1f}"
        return str(v)
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(cell(r, c) for c in cols) + " |" for r in records]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(max(records, key=len)), restval="")
    w.writeheader()
    w.writerows(records)
    return "\n".join(md) + "\n", buf.getvalue()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "NLG", "pretrained_checkpoints", "SmolLM2-135M-Instruct"))
    p.add_argument("--e2e_dir", default=os.path.join(ROOT, "NLG", "data", "e2e"),
                   help="create_datasets.sh's E2E folder (train_formatted.jsonl)")
    p.add_argument("--eval_file", default=None,
                   help="E2E-format file scored (default E2E dev: E2E_DIR/valid_formatted.jsonl; "
                        "a *_formatted.jsonl or MR||REF .txt)")
    p.add_argument("--eval_mrs", type=int, default=100, help="distinct MRs decoded, all references kept")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--jobs", type=int, default=2, help="rows side by side (one thread each)")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help="task-script variants (NLG/scripts/e2e_<variant>.sh); the base row is always added")
    p.add_argument("--no_base", action="store_true", help="leave out the untrained model's row")
    p.add_argument("--work_dir", default=os.path.join(ROOT, "benchmarks", "out", "real_e2e"))
    p.add_argument("--force", action="store_true", help="redo every row")
    args = p.parse_args(argv)
    args.eval_file = args.eval_file or os.path.join(args.e2e_dir, "valid_formatted.jsonl")
    args.model = os.path.abspath(args.model)
    args.work_dir = os.path.abspath(args.work_dir)
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        p.error(f"--model {args.model}: not a model folder (bash download_pretrained_checkpoints.sh --models smollm2)")
    if not os.path.isfile(os.path.join(args.e2e_dir, "train_formatted.jsonl")):
        p.error(f"--e2e_dir {args.e2e_dir}: no train_formatted.jsonl (bash create_datasets.sh --tasks e2e)")
    names = [m for m in args.methods.split(",") if m] + ([] if args.no_base else ["base"])
    args.chat_prefix, args.chat_header = chat_framing(args.model)
    try:
        for n in names:
            script_of(n)
        dirs, n_lines, n_mrs = build_data(args)
    except ValueError as e:
        p.error(str(e))
    print(f"{len(names)} rows, {args.jobs} at a time: {args.steps} steps x {BATCH} on "
          f"{args.steps * BATCH} E2E training lines; {n_mrs} MRs ({n_lines} reference lines) of "
          f"{args.eval_file} -> {args.work_dir}", flush=True)
    # The longest rows first, so that two queues end together.
    order = sorted(names, key=lambda n: (n != "ft", n == "base"))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = {r["name"]: r for r in pool.map(lambda n: run_row(n, args, dirs), order)}
    shown = (["base"] if "base" in names else []) + [n for n in names if n != "base"]
    records = [row_record(results[n]) for n in shown]
    md, csv_text = tables(records)
    settings = (f"HF backbone {os.path.basename(args.model)}; {args.steps} steps x "
                f"batch {BATCH}, warm-up {max(1, args.steps // 10)}, linear decay; beam 4, length "
                f"penalty 0.9, no-repeat 4-grams, <= 48 new tokens; {n_mrs} MRs of "
                f"{os.path.relpath(args.eval_file, ROOT)}; {args.jobs} rows side by side, one "
                f"thread each; {time.strftime('%Y-%m-%d')}")
    for name, text in (("table.md", md + "\n" + settings + "\n"), ("table.csv", csv_text)):
        with open(os.path.join(args.work_dir, name), "w", encoding="utf8") as f:
            f.write(text)
    print()
    print(md)
    print(settings)


if __name__ == "__main__":
    main()
