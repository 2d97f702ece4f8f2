"""What a finished run records, read into one shape (`Run`) whichever pipeline wrote it.

`nlg.report` groups and prints these; this module only reads. What each pipeline leaves in its
run folder, and what is taken from it:

  GPT-2 (gpt2_ft.py, run_task.sh)   run_info.json: method, model card, trainable / total parameters,
      final checkpoint, training CPU time, peak memory; the final model.<step>.pt: the method
      record (key "loralib") and the adapter tensors (their bytes); resume.pt: "settings", the
      training settings gpt2_ft.py checks on --resume (finetune.RESUME_SETTINGS), the seed among
      them; train_log.jsonl / valid_log.jsonl: the loss curves. run_task.sh's stamps:
      .stamp.score (its first line is the task), .stamp.beam (the decoding flags). Scores:
      scores.json (E2E), eval_<split>/scores.json (WebNLG all / seen / unseen, DART all), as
      eval/score.py --json writes them ("unavailable" says why a metric is null).
  RoBERTa (run_glue.py)   run_config.json: "args" (task, seed, settings), "method", "model";
      eval_results.json: the metrics (with per-epoch evaluation, "best": the best epoch's);
      pytorch_model.bin: the saved adapter + classifier head (its bytes); train_log.jsonl.
  LLM (NLG/MetaMathQA)   run_info.json: "method", "trainable_params", "args" (seed, settings);
      gsm8k_results.json, math_results.json, mmlu_results.json ({"accuracy", ...}); adapter/
      (loralib.save_adapter: its tensors' bytes); train_log.jsonl.

A run that lacks something a table needs keeps a line saying what (`Run.problems`); nothing is
dropped silently. Task names: nlg.tasks (e2e, webnlg, dart), nlu.glue_data (cola, sst2, ...),
"gsm8k", "math", "mmlu"; "unknown" where a run records none.
"""
import json
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from nlg.tasks import TASKS as NLG_TASKS

# Files whose presence makes a folder a run folder.
MARKERS = ("run_info.json", "scores.json", "eval_results.json", "run_config.json",
           "gsm8k_results.json", "math_results.json", "mmlu_results.json")
LLM_EVALS = ("gsm8k", "math", "mmlu")     # <task>_results.json beside an LLM run
# gpt2_beam.py flags that change what is decoded (batching and work files do not).
DECODE_SETTINGS = ("data", "seq_len", "eval_len", "beam", "min_length", "length_penalty",
                   "no_repeat_ngram_size", "repetition_penalty", "eos_token_id", "bf16", "fp16")
# run_glue.py evaluation flags that change the scores (beside its RESUME_SETTINGS).
NLU_EVAL_SETTINGS = ("max_eval_samples", "evaluation_strategy")
# train_math_lorma.py flags that do not change what is trained (output, logging, resuming).
LLM_PLUMBING = ("output_dir", "logging_steps", "save_strategy", "save_steps", "save_total_limit",
                "resume_every", "resume", "stop_after_steps", "local_rank",
                "per_device_eval_batch_size", "eval_strategy", "model_name_or_path", "seed")


class RunError(ValueError):
    """A run folder that cannot be read (the message names the file)."""


@dataclass
class Result:
    task: str
    split: str                              # "all"; WebNLG also "seen" / "unseen"; GLUE "dev"
    scores: Dict[str, Optional[float]]      # scorer key -> value (None: not computed)
    missing: Dict[str, str] = field(default_factory=dict)   # scorer key -> why
    settings: Dict = field(default_factory=dict)            # evaluation settings
    source: str = ""                        # the file the scores came from
    extra: Dict = field(default_factory=dict)   # e.g. MMLU's per-subject accuracies


@dataclass
class Run:
    path: str
    pipeline: str                           # gpt2 | roberta | llm | scores (no training record)
    method: Dict                            # MethodConfig.to_dict(), or {"method": "none"|"unknown"}
    model: str                              # model card / model name as recorded
    seed: Optional[int] = None
    settings: Dict = field(default_factory=dict)     # training settings, without the seed
    trainable_params: Optional[int] = None
    adapter_bytes: Optional[int] = None
    train_cpu_s: Optional[float] = None
    peak_mem_mb: Optional[float] = None
    results: List[Result] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    curves: Dict[str, Tuple[List[int], List[float]]] = field(default_factory=dict)
    label: Optional[str] = None             # a name the user gave it (display only)


# -- small readers ------------------------------------------------------------------------------

def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise RunError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def read_curve(path, key, problems):
    """(steps, values) of the JSON lines in `path` that have "step" and `key`; a line that is not
    JSON is named in `problems` (a killed run may leave a partial last line)."""
    steps, values = [], []
    if not os.path.isfile(path):
        return steps, values
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                problems.append(f"{path}:{n}: not a JSON line (skipped in the loss plot)")
                continue
            if isinstance(rec, dict) and isinstance(rec.get(key), (int, float)) and "step" in rec:
                steps.append(int(rec["step"]))
                values.append(float(rec[key]))
    return steps, values


def read_stamp(path):
    """run_task.sh's stamp of a step: its argument lines, then one 'FILE SIZE MTIME' line per
    input (the lines after the arguments are dropped). None when there is no stamp."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    while lines and re.match(r"^.+ (\d+ \d+|missing)$", lines[-1]):
        lines.pop()
    return lines


def flags_of(argv):
    """{flag: value} of an argument list; a flag without a value is True."""
    out, i = {}, 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                out[a[2:]] = argv[i + 1]
                i += 2
                continue
            out[a[2:]] = True
        i += 1
    return out


def _number(text):
    """A stamp's value as the number it is (so '0.8' and 0.8 group together)."""
    if isinstance(text, str):
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
    return text


def tensor_bytes(path, keep=None):
    """Bytes of the tensors in a checkpoint (`keep(key)` picks some): safetensors from its
    header, torch files memory-mapped (nothing is read but the index)."""
    if path.endswith(".safetensors"):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        return sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items()
                   if k != "__metadata__" and (keep is None or keep(k)))
    state = load_torch(path)
    state = state.get("model_state_dict", state) if isinstance(state, dict) else state
    return sum(v.numel() * v.element_size() for k, v in state.items()
               if hasattr(v, "element_size") and (keep is None or keep(k)))


def load_torch(path):
    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:   # the file's own error says little; name the file
        raise RunError(f"{path}: not a readable torch file ({type(e).__name__}: {e})") from None


def method_family(method):
    """A registered preset (lorma_plus) and its method (lorma with kind rri) compute the same: the
    record is keyed by the family."""
    import loralib as lora
    name = method.get("method")
    try:
        return {**method, "method": lora.get_spec(name).family}
    except ValueError:      # full, none, or a method this install does not register
        return dict(method)


# -- finding run folders --------------------------------------------------------------------------

def _is_run(d):
    return any(os.path.isfile(os.path.join(d, m)) for m in MARKERS) or \
        any(os.path.isfile(os.path.join(d, f"eval_{s}", "scores.json")) for s in ("all", "seen", "unseen"))


def find_run_dirs(path):
    """(run folders, unfinished run folders): `path` itself when it is a run folder, else every
    run folder below it (sorted). Unfinished: a resumable state (resume.pt) and no run record
    yet (gpt2_ft.py and run_glue.py write theirs at the end)."""
    if not os.path.isdir(path):
        raise RunError(f"{path}: no such folder")
    if _is_run(path):
        return [path], []
    found, unfinished = [], []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        if _is_run(root):
            found.append(root)
            dirs[:] = []        # a run's sub-folders (eval_all/, adapter/) are part of it
        elif "resume.pt" in files:
            unfinished.append(root)
    if not found and not unfinished:
        raise RunError(f"{path}: no run folder in it (looked for {', '.join(MARKERS)}, "
                       f"eval_<split>/scores.json)")
    return found, unfinished


def read_run(path, base_model=False):
    """The Run a folder records. base_model: the folder holds a model decoded without adapter
    (no training record; the user says so): no trainable parameters, no adapter."""
    info_path = os.path.join(path, "run_info.json")
    info = read_json(info_path) if os.path.isfile(info_path) else None
    if os.path.isfile(os.path.join(path, "run_config.json")):
        run = _read_roberta(path)
    elif info is not None and "args" in info:
        run = _read_llm(path, info)
    elif info is not None:
        run = _read_gpt2(path, info)
    elif any(os.path.isfile(os.path.join(path, f"{t}_results.json")) for t in LLM_EVALS):
        run = Run(path, "scores", {"method": "unknown"}, "?")
        _llm_results(run, path, required=())
    else:
        run = Run(path, "scores", {"method": "unknown"}, "?")
        _gpt2_results(run, path, None)
    if base_model:
        if run.pipeline != "scores":
            raise RunError(f"{path}: holds a training record ({info_path if info else 'run_config.json'}): "
                           f"it is a trained run, not a base model")
        run.method, run.trainable_params, run.adapter_bytes = {"method": "none"}, 0, 0
    elif run.pipeline == "scores":
        run.problems.append("no training record (run_info.json): method, seed and settings "
                            "unknown (a base model's decoding? name it with --base LABEL=DIR)")
    return run


# -- GPT-2 (NLG) ------------------------------------------------------------------------------

def _final_checkpoint(path, info, info_path):
    ckpt = info.get("final_checkpoint")
    if not ckpt:
        raise RunError(f"{info_path}: no 'final_checkpoint' (not written by gpt2_ft.py?)")
    for cand in (ckpt, os.path.join(path, ckpt), os.path.join(path, os.path.basename(ckpt))):
        if os.path.isfile(cand):      # the folder may have moved since the run
            return cand
    raise RunError(f"{info_path}: its final checkpoint {ckpt} is not there")


def _read_gpt2(path, info):
    import loralib as lora
    info_path = os.path.join(path, "run_info.json")
    ckpt = _final_checkpoint(path, info, info_path)
    obj = load_torch(ckpt)
    record = obj.get("loralib") if isinstance(obj, dict) else None
    settings, problems = _gpt2_settings(path, info)
    method = record or settings.get("method")
    if not isinstance(method, dict):
        method = {"method": info.get("method", "unknown")}
        problems.append(f"{ckpt}: no method record (key 'loralib'); only the name "
                        f"{method['method']!r} is known from run_info.json")
    method = {k: v for k, v in method.items() if k != "loralib_version"}
    settings.pop("method", None)
    full = method["method"] in ("full", "none")
    sd = obj.get("model_state_dict", obj)
    adapter = sum(v.numel() * v.element_size() for k, v in sd.items()
                  if hasattr(v, "element_size") and (full or lora.is_adapter_key(k)))
    seed = settings.pop("random_seed", None)
    seed = info.get("random_seed", seed)
    if seed is None:
        problems.append("no recorded seed (resume.pt is gone and run_info.json has none)")
    run = Run(path, "gpt2", method, str(info.get("model_card", "?")), seed=seed, settings=settings,
              trainable_params=info.get("trainable_params"), adapter_bytes=adapter,
              train_cpu_s=info.get("train_cpu_s"), peak_mem_mb=info.get("peak_mem_mb"),
              problems=problems)
    run.curves = {"train": read_curve(os.path.join(path, "train_log.jsonl"), "loss", run.problems),
                  "valid": read_curve(os.path.join(path, "valid_log.jsonl"), "valid_loss", run.problems)}
    _gpt2_results(run, path, info.get("task"))
    return run


def _gpt2_settings(path, info):
    """The training settings: run_info.json's "settings" where a run writes them, else those
    resume.pt holds (what gpt2_ft.py itself compares on --resume)."""
    problems = []
    if isinstance(info.get("settings"), dict):
        return dict(info["settings"]), problems
    resume = os.path.join(path, "resume.pt")
    if os.path.isfile(resume):
        state = load_torch(resume)
        if isinstance(state, dict) and isinstance(state.get("settings"), dict):
            return dict(state["settings"]), problems
    problems.append("training settings not recorded (no resume.pt with 'settings'; "
                    "run_info.json has none): grouped by method, model and task only")
    return {}, problems


def _gpt2_task(run, path, recorded):
    if recorded:
        return recorded
    stamp = read_stamp(os.path.join(path, ".stamp.score"))
    if stamp:
        return stamp[0]
    for f in ("scores.json", os.path.join("eval_all", "scores.json")):   # a score step that says
        f = os.path.join(path, f)
        if os.path.isfile(f) and isinstance(read_json(f).get("task"), str):
            return read_json(f)["task"]
    # No record: what the score step wrote tells E2E (its scorer alone reports NIST) and WebNLG
    # (the only task scored on categories) apart; DART's layout is that of any other task.
    scores = os.path.join(path, "scores.json")
    if os.path.isfile(scores) and "NIST" in read_json(scores):
        return "e2e"
    if any(os.path.isdir(os.path.join(path, f"eval_{s}")) for s in ("seen", "unseen")):
        return "webnlg"
    if os.path.isfile(scores) or os.path.isdir(os.path.join(path, "eval_all")):
        run.problems.append("task not recorded (no run_task.sh stamp .stamp.score): shown "
                            "as 'unknown'")
    return "unknown"


def _gpt2_results(run, path, recorded_task):
    task = _gpt2_task(run, path, recorded_task)
    decode = {}
    beam = read_stamp(os.path.join(path, ".stamp.beam"))
    if beam is not None:
        flags = flags_of(beam)
        decode = {k: _number(flags[k]) for k in DECODE_SETTINGS if k in flags}
        score = read_stamp(os.path.join(path, ".stamp.score"))
        if score and len(score) >= 3 and task in NLG_TASKS and NLG_TASKS[task].references != "e2e":
            decode["ref_num"] = _number(score[2])
    elif run.pipeline == "gpt2":
        run.problems.append("decoding settings not recorded (no run_task.sh stamp .stamp.beam)")
    if task not in NLG_TASKS:
        splits = [("all", os.path.join(path, "scores.json"))]
    elif NLG_TASKS[task].references == "e2e":
        splits = [("all", os.path.join(path, "scores.json"))]
    else:
        splits = [(s, os.path.join(path, f"eval_{s}", "scores.json"))
                  for s in NLG_TASKS[task].score_splits]
        if not os.path.isfile(splits[0][1]) and os.path.isfile(os.path.join(path, "scores.json")):
            splits[0] = ("all", os.path.join(path, "scores.json"))
    for split, file in splits:
        res = Result(task, split, {}, settings=dict(decode), source=file)
        if os.path.isfile(file):
            obj = read_json(file)
            res.missing = dict(obj.get("unavailable") or {})
            res.scores = {k: v for k, v in obj.items() if k not in ("unavailable", "scorer")
                          and (v is None or isinstance(v, (int, float)))}
        elif os.path.isdir(os.path.dirname(file)) and os.path.dirname(file) != path:
            res.missing = {"*": f"not scored: no {split} examples in the test set (no {file})"}
        else:
            res.missing = {"*": f"not scored: no {file} (decode + score did not run)"}
        run.results.append(res)


# -- RoBERTa (NLU) ----------------------------------------------------------------------------

def _read_roberta(path):
    from nlu.glue_data import task_spec
    from nlu.glue_train import RESUME_SETTINGS
    cfg_path = os.path.join(path, "run_config.json")
    cfg = read_json(cfg_path)
    args = cfg.get("args")
    if not isinstance(args, dict) or "task_name" not in args:
        raise RunError(f"{cfg_path}: no 'args' with 'task_name' (not written by run_glue.py?)")
    settings = {k: args.get(k) for k in RESUME_SETTINGS + NLU_EVAL_SETTINGS
                if k not in ("seed", "method", "world_size") and k in args}
    method = cfg.get("method") or {"method": "unknown"}
    run = Run(path, "roberta", method, str(args.get("model_card", "?")), seed=args.get("seed"),
              settings=settings, trainable_params=cfg.get("trainable_params"))
    if run.trainable_params is None:
        run.problems.append("trainable parameters not recorded (run_glue.py prints them; "
                            "run_config.json has no 'trainable_params')")
    weights = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(weights):
        run.adapter_bytes = tensor_bytes(weights)
    else:
        run.problems.append(f"no {weights}: adapter size unknown")
    run.curves = {"train": read_curve(os.path.join(path, "train_log.jsonl"), "loss", run.problems)}
    try:
        spec = task_spec(args["task_name"])
    except ValueError as e:
        raise RunError(f"{cfg_path}: {e}") from None
    from nlu.glue_data import ALIASES
    task = ALIASES.get(args["task_name"].lower(), args["task_name"].lower())
    stems = [os.path.splitext(f)[0] for f in spec.dev_files]
    keys = [f"{s}_{m}" for s in stems for m in spec.scores] if len(stems) > 1 else list(spec.scores)
    res_path = os.path.join(path, "eval_results.json")
    res = Result(task, "dev", {}, source=res_path)
    if os.path.isfile(res_path):
        obj = read_json(res_path)
        # The papers report each run's best epoch (run_glue keeps it under "best").
        values = obj.get("best") if isinstance(obj.get("best"), dict) else obj
        res.settings = {"epoch": "best"} if values is not obj else {}
        res.scores = {k: values[k] for k in keys if isinstance(values.get(k), (int, float))}
        res.missing = {k: "not in eval_results.json (evaluation did not run?)" for k in keys
                       if k not in res.scores}
    else:
        res.missing = {"*": f"not evaluated: no {res_path}"}
    run.results.append(res)
    return run


# -- LLM (NLG/MetaMathQA) ---------------------------------------------------------------------

def _method_flag_names():
    """Every method flag's name (they are summed up in "method"; spellings differ)."""
    import argparse

    import loralib as lora
    p = argparse.ArgumentParser(add_help=False)
    lora.add_method_args(p)
    return set(vars(p.parse_args([])))


def _read_llm(path, info):
    args = info["args"]
    skip = set(LLM_PLUMBING) | _method_flag_names()
    settings = {k: v for k, v in args.items() if k not in skip}
    method = info.get("method") if isinstance(info.get("method"), dict) else {"method": "unknown"}
    run = Run(path, "llm", method, str(args.get("model_name_or_path", "?")), seed=args.get("seed"),
              settings=settings, trainable_params=info.get("trainable_params"))
    adapter = os.path.join(path, "adapter")
    if method.get("method") in ("full", "none"):
        files = [os.path.join(path, f) for f in sorted(os.listdir(path))
                 if f.endswith(".safetensors") or re.match(r"pytorch_model.*\.bin$", f)]
    else:
        files = [os.path.join(adapter, f) for f in ("adapter_model.safetensors", "adapter_model.bin")
                 if os.path.isfile(os.path.join(adapter, f))][:1]
    if files:
        run.adapter_bytes = sum(tensor_bytes(f) for f in files)
    else:
        run.problems.append(f"no adapter file in {adapter}: adapter size unknown")
    run.curves = {"train": read_curve(os.path.join(path, "train_log.jsonl"), "loss", run.problems)}
    _llm_results(run, path, required=("gsm8k", "math"))
    return run


def _llm_results(run, path, required):
    for task in LLM_EVALS:
        file = os.path.join(path, f"{task}_results.json")
        if not os.path.isfile(file):
            if task in required:
                run.results.append(Result(task, "all", {}, {"*": f"not evaluated: no {file}"},
                                          source=file))
            continue
        obj = read_json(file)
        scores = {k: obj[k] for k in ("accuracy", "accuracy_questions", "invalid")
                  if isinstance(obj.get(k), (int, float))}
        if "accuracy" not in scores:
            raise RunError(f"{file}: no 'accuracy'")
        settings = {k: obj[k] for k in ("total", "split", "shots") if k in obj}
        extra = {"subjects": obj["subjects"]} if isinstance(obj.get("subjects"), dict) else {}
        run.results.append(Result(task, "all", scores, settings=settings, source=file, extra=extra))
