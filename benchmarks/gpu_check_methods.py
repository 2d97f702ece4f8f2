"""Every method's step for benchmarks/gpu_check.py: each variant the script generators know (LoRA,
LoRMA_+, LoRMA_pi, MTLoRA, NOLA, qNOLA; and NOLA with --nola_basis_device native) trains a few
steps with gpt2_ft.py on this device and saves its final model.<step>.pt; gpt2_beam.py then
decodes that file in a fresh process, and its predictions must equal those of the model that
was trained, decoded here on the same device as it stood after its last step ("live").

Why this catches the NOLA bug fixed on the CPU side of issue 22 (bf3db67, e20046f): NOLA's bases
were drawn from each factor's seed on the device of its coefficients, and gpt2_beam merged the
adapter on the CPU right after loading, before the model moved to the GPU. An adapter trained
on a GPU was thus decoded with CPU-drawn bases, other numbers than those it trained with, so its
merged weights and its predictions were noise next to the live model's: here, a FAIL row
("predictions differ", and the merged weights' difference far from 0). The qNOLA save on a GPU
(pack_codes built its bit indices on the CPU next to GPU codes) failed in gpt2_ft's final save:
a FAIL row naming the device error.

    python benchmarks/gpu_check_methods.py --decode JOBS.json     (the decoding process)
"""
import argparse
import contextlib
import hashlib
import json
import time
from pathlib import Path

import torch

from gpu_check_core import (Setting, call_main, e2e_examples, one_line, python, run_command,
                            write_jsonl)

QUICK = ("lora", "lorma_plus", "lorma_pi", "mtlora_icfm", "nola", "qnola")


def variants(setting: Setting):
    """name -> gpt2_ft.py method flags, from the registry the script generators use."""
    import loralib as lora
    out = {}
    for name, (method, flags) in lora.script_variants().items():
        if setting.quick and name not in QUICK:
            continue
        rank = (["--lora_dim", "4", "--lora_alpha", "32"] if lora.get_spec(method).cli.uses_lora_dim
                else ["--nola_rank", "4", "--nola_num_basis", "64"])
        out[name] = ["--method", method, *flags.replace("${QBITS}", "3").split(), *rank]
    out["nola_native"] = out["nola"] + ["--nola_basis_device", "native"]
    return out


@contextlib.contextmanager
def trained_model():
    """The model gpt2_ft.py trained, as it stood when its final checkpoint was written: the
    trainer hands it to nlg.finetune._finish, which this wraps (the list gets it)."""
    from nlg import finetune
    box, finish = [], finetune._finish

    def keep(*args, **kwargs):
        box.append(next(a for a in args if isinstance(a, torch.nn.Module)))
        return finish(*args, **kwargs)
    finetune._finish = keep
    try:
        yield box
    finally:
        finetune._finish = finish


def backbone(model) -> dict:
    """The model's weights but its adapter tensors (merged: where the adapters went)."""
    import loralib as lora
    return {k: v for k, v in model.state_dict().items() if not lora.is_adapter_key(k)}


def _max_diff(a: dict, b: dict, keys) -> float:
    return max(((a[k].float() - b[k].float()).abs().max().item() for k in keys), default=0.0)


def train_and_decode_live(setting: Setting, name, flags, train, card, beam_flags, log):
    """gpt2_ft.py on this device; the trained model merged on the device and decoded here; the
    merged weights the file must give kept in live_merged.pt (the decoding process checks)."""
    from nlg import beam_run, gpt2_beam, gpt2_ft
    from traincore import Precision
    wd = setting.work / "methods" / name
    argv = ["--train_data", train, "--valid_data", train, "--model_card", card,
            "--random_init", "--train_batch_size", "4", "--seq_len", "128", "--max_step", "3",
            "--lr", "0.01", "--log_interval", "1", "--eval_interval", "1000",
            "--save_interval", "1000", "--random_seed", "7", "--work_dir", wd, "--overwrite",
            "--no_tensorboard", "--no_progress", *flags]
    with trained_model() as box:
        final = call_main(gpt2_ft.main, argv, log)
    model = box[0].eval()
    losses = [json.loads(x)["loss"] for x in (wd / "train_log.jsonl").read_text().splitlines()]
    beam_argv = [str(a) for a in beam_flags] + ["--init_checkpoint", final, "--work_dir", str(wd),
                                                "--output_file", "predict.jsonl"]
    args = gpt2_beam.build_parser().parse_args(beam_argv)
    precision = Precision.from_flags(False, False, setting.device)
    precision.apply()
    before = {k: v.detach().clone() for k, v in backbone(model).items()}
    beam_run.ready_for_decoding(model, setting.device, precision)        # merged on the device
    merged = backbone(model)
    changed = [k for k in merged if not torch.equal(merged[k], before[k])]
    torch.save({"changed": {k: merged[k].cpu() for k in changed},
                "digests": {k: digest(v) for k, v in merged.items()}}, wd / "live_merged.pt")
    contexts = beam_run.read_contexts(args.data, args.seq_len, args.eval_len, model.config.vocab_size)
    with torch.no_grad(), beam_run.cpu_products(setting.device, None, False):
        live = beam_run.decode(model, contexts, beam_run.settings_from_args(args), args,
                               log=lambda *a: None)
    return {"live": live, "beam_argv": beam_argv, "work_dir": str(wd),
            "merge_moved_weights_by": _max_diff(merged, before, changed), "changed_tensors": len(changed),
            "loss_first": losses[0], "loss_last": losses[-1]}


def digest(t: torch.Tensor) -> str:
    """The tensor's bytes, hashed: equal digests, bit-identical tensors."""
    return hashlib.sha256(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest()


def check_methods(setting: Setting, part):
    card = setting.small_card()
    work = setting.work / "methods"
    work.mkdir(exist_ok=True)
    train = write_jsonl(work / "train.jsonl", e2e_examples(32, seed=5, vocab=setting.vocab))
    test = write_jsonl(work / "test.jsonl", [(c, [setting.vocab - 1]) for c, _ in
                                             e2e_examples(12, seed=6, vocab=setting.vocab)])
    beam_flags = ["--data", test, "--model_card", card, "--beam", "10", "--eval_len", "16",
                  "--seq_len", "128", "--length_penalty", "0.8", "--no_repeat_ngram_size", "4",
                  "--eos_token_id", "628"]
    runs = {}
    reserve = setting.pick(25, tiny=10)      # for gpt2_beam's process at the end
    for name, flags in variants(setting).items():
        if part.left() < reserve:
            part.skipped(f"method {name}", "the part's time budget is spent")
            continue
        t0 = time.perf_counter()
        r = part.attempt(f"method {name}: train{' on the GPU' if setting.gpu else ''} + save",
                         train_and_decode_live, setting, name, flags, train, card, beam_flags,
                         part.log)
        if r:
            r["train_s"] = time.perf_counter() - t0
            runs[name] = r
    if not runs:
        return
    # gpt2_beam.py on every saved file, in one fresh process (nothing cached from training)
    jobs = work / "decode_jobs.json"
    results = work / "decode_results.json"
    jobs.write_text(json.dumps({"out": str(results), "log": str(work / "decode.log"),
                                "device": str(setting.device),
                                "jobs": {n: r["beam_argv"] for n, r in runs.items()}}))
    results.write_text("{}")
    try:
        run_command([python(), Path(__file__).resolve(), "--decode", jobs], part.log,
                    timeout=part.left())
    except RuntimeError as e:
        part.trace(e)
    decoded = json.loads(results.read_text())
    for name, r in runs.items():
        check = f"method {name}: step, save, gpt2_beam == live"
        d = decoded.get(name)
        if d is None:
            part.failed(check, f"gpt2_beam was not run on it (logs: {part.log}, "
                               f"{work / 'decode.log'})")
            continue
        if "error" in d:
            part.failed(check, f"gpt2_beam: {d['error']}")
            continue
        rows = (Path(r["work_dir"]) / "predict.jsonl").read_text().splitlines()
        from_file = [json.loads(x)["predict"] for x in rows]
        same = sum(a == b for a, b in zip(from_file, r["live"]))
        n = len(r["live"])
        figure = (f"{same}/{n} predictions equal, merged weights "
                  + ("bit-identical" if d["weights_equal"] else
                     f"differ in {d['tensors_differing']} tensors by up to {d['max_diff']:.1e}")
                  + f" (the adapter moves them by {r['merge_moved_weights_by']:.1e}), loss "
                  f"{r['loss_first']:.3f} -> {r['loss_last']:.3f}")
        part.verdict(check, same == n == len(from_file) and d["weights_equal"], figure,
                     "the decoded file is not the model that was trained",
                     **d, **{k: v for k, v in r.items() if k not in ("live", "beam_argv")})


def decode_worker(jobs_path):
    """For each job: gpt2_beam.main on its command line (the predictions), then the file loaded
    and merged as gpt2_beam.py does it, against the live model's merged weights (digests of
    every tensor, the largest difference of those the adapter changed)."""
    from nlg import beam_run, gpt2_beam
    from traincore import Precision
    spec = json.loads(Path(jobs_path).read_text())
    device = torch.device(spec["device"])
    out = {}
    for name, argv in spec["jobs"].items():
        try:
            call_main(gpt2_beam.main, argv, Path(spec["log"]))
            args = gpt2_beam.build_parser().parse_args(argv)
            model, _ = beam_run.load_model(args, beam_run.resolve_method(args))
            beam_run.ready_for_decoding(model, device, Precision.from_flags(False, False, device))
            merged = backbone(model)
            live = torch.load(Path(args.work_dir) / "live_merged.pt", weights_only=True)
            differing = [k for k, v in live["digests"].items() if k not in merged or digest(merged[k]) != v]
            out[name] = {"weights_equal": not differing and set(merged) == set(live["digests"]),
                         "tensors_differing": len(differing),
                         "max_diff": _max_diff({k: v.to(device) for k, v in live["changed"].items()},
                                               merged, live["changed"])}
        except Exception as e:
            out[name] = {"error": one_line(e)}
        print(f"{name}: {out[name]}", flush=True)
        Path(spec["out"]).write_text(json.dumps(out))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--decode", required=True)
    decode_worker(ap.parse_args().decode)
