"""Greedy generation for the GSM8K / MATH evaluations, and what both evaluation scripts share.

vLLM (as the official evaluation) when it is installed and a GPU is present; otherwise Hugging
Face `generate`, greedy, batched with a KV cache and left padding, cut at the same stop strings
as vLLM's (the output ends before the first stop string). A progress bar with ETA runs while
generating.
"""
import argparse
import json
import os
import sys
from typing import List

EVAL_PROMPT = ("Below is an instruction that describes a task. Write a response that "
               "appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
               "### Response: Let's think step by step.")
STOP = ["Question:", "Question", "USER:", "USER", "ASSISTANT:", "ASSISTANT", "Instruction:",
        "Instruction", "Response:", "Response"]


def build_parser(description, max_tokens):
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="folder of a saved (merged) causal LM")
    p.add_argument("--data_file", required=True, help="test file (JSON lines)")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--end", type=int, default=sys.maxsize)
    p.add_argument("--batch_size", type=int, default=400, help="prompts per generation call")
    p.add_argument("--tensor_parallel_size", type=int, default=1, help="(vLLM)")
    p.add_argument("--max_tokens", type=int, default=max_tokens, help="new tokens per answer")
    p.add_argument("--backend", default="auto", choices=("auto", "vllm", "hf"),
                   help="auto: vLLM when installed and a GPU is present, else Hugging Face")
    p.add_argument("--results", default=None,
                   help="results JSON (default: <model>/<task>_results.json)")
    from traincore import cli
    cli.setup_parser(p)
    return p


def read_jsonl(path: str, start: int, end: int) -> List[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
    return rows[start:end]


def cut_at_stop(text: str) -> str:
    cut = min((i for i in (text.find(s) for s in STOP) if i >= 0), default=len(text))
    return text[:cut]


def _use_vllm(backend: str) -> bool:
    if backend == "hf":
        return False
    try:
        import torch
        import vllm  # noqa: F401
        ok = torch.cuda.is_available()
    except ImportError:
        ok = False
    if backend == "vllm" and not ok:
        raise ValueError("--backend vllm: needs the vllm package and a GPU")
    return ok


def generate(model_dir: str, prompts: List[str], args) -> List[str]:
    from model_check import check_model
    check_model(model_dir, "--model")
    if _use_vllm(args.backend):
        from vllm import LLM, SamplingParams
        llm = LLM(model=model_dir, tensor_parallel_size=args.tensor_parallel_size)
        params = SamplingParams(temperature=0.0, top_p=1, max_tokens=args.max_tokens, stop=STOP)
        out = []
        for i in range(0, len(prompts), args.batch_size):
            out += [o.outputs[0].text for o in llm.generate(prompts[i:i + args.batch_size],
                                                            params)]
        return out
    return _hf_generate(model_dir, prompts, args)


def _hf_generate(model_dir, prompts, args):
    import torch
    import transformers
    from tqdm import tqdm
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = transformers.AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.bfloat16 if device == "cuda" else torch.float32).to(device).eval()
    # Long prompts first: batches of similar length pad less.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    batch = max(1, min(args.batch_size, 64 if device == "cuda" else 16))
    out = [None] * len(prompts)
    bar = tqdm(total=len(prompts), unit="prompt", desc="generating", disable=None,
               mininterval=2.0)
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        enc = tok([prompts[j] for j in idx], return_tensors="pt", padding=True).to(device)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=args.max_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, stop_strings=STOP,
                                 tokenizer=tok)
        for j, row in zip(idx, gen[:, enc["input_ids"].shape[1]:]):
            out[j] = cut_at_stop(tok.decode(row, skip_special_tokens=True))
        bar.update(len(idx))
    bar.close()
    return out


def report(task: str, label: str, result: List[bool], invalid: List[dict], args,
           extra: dict = None) -> float:
    """The official summary lines (`<label>length==== N , <label>acc==== X`) and the results
    JSON next to the model; returns the accuracy."""
    acc = sum(result) / len(result) if result else 0.0
    print("len invalid outputs ====", len(invalid), ", valid_outputs===", invalid)
    print("start===", args.start, ", end====", args.end)
    print(f"{label}length====", len(result), f", {label}acc====", acc)
    path = args.results or os.path.join(args.model, f"{task}_results.json")
    out = {"task": task, "data_file": args.data_file, "accuracy": acc, "correct": sum(result),
           "total": len(result), "invalid": len(invalid), "invalid_outputs": invalid,
           **(extra or {})}
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
    os.replace(tmp, path)
    return acc
