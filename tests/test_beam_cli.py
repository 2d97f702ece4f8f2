"""gpt2_beam.py end to end: checkpoints (final alone, backbone + adapter, errors), the output
file, the seed command lines, and 2 gloo processes writing the same file as one."""
import ast
import json
import os
import re
import runpy
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_beam_search import reference_beam

SRC = Path(__file__).resolve().parents[1] / "NLG" / "src"
CARD = {"vocab_size": 64, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 128}
EOT = 63
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def run_beam(script, argv):
    """`python src/<script> argv...` in this process (no launcher environment)."""
    old_argv, old_env = sys.argv, dict(os.environ)
    for var in LAUNCH_VARS:
        os.environ.pop(var, None)
    sys.argv = [str(SRC / script)] + [str(a) for a in argv]
    try:
        runpy.run_path(str(SRC / script), run_name="__main__")
    finally:
        sys.argv = old_argv
        os.environ.clear()
        os.environ.update(old_env)


def read_predictions(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def random_adapted_model(card, method, seed=0, std=0.3):
    """A GPT2LMModel whose backbone and adapter are all random (so the adapter matters)."""
    from nlg.model import GPT2LMModel, config_from_card
    torch.manual_seed(seed)
    model = GPT2LMModel(config_from_card(card, method=method))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std)
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import loralib as lora
    from nlg.checkpoint import backbone_state_dict, training_state_dict
    d = tmp_path_factory.mktemp("beam_cli")
    card = d / "card.json"
    card.write_text(json.dumps(CARD))
    model = random_adapted_model(str(card), lora.MethodConfig(method="lora", r=2, alpha=4))
    torch.save({"model_state_dict": training_state_dict(model)}, d / "model.final.pt")
    torch.save({"model_state_dict": lora.lora_state_dict(model)}, d / "adapter.pt")
    torch.save(backbone_state_dict(model), d / "backbone.bin")
    g = torch.Generator().manual_seed(1)
    contexts = [torch.randint(0, EOT, (int(torch.randint(2, 12, (1,), generator=g)),),
                              generator=g).tolist() + [EOT] for _ in range(5)]
    lines = [contexts[(i * 7) % 5] for i in range(13)]  # every context several times, shuffled
    data = d / "data.jsonl"
    data.write_text("".join(json.dumps({"context": c, "completion": [1, 2, EOT]}) + "\n" for c in lines))
    return {"dir": d, "card": str(card), "model": model.eval(), "lines": lines, "data": str(data)}


def common_args(tiny, out, name, eval_len=10):
    return ["--data", tiny["data"], "--batch_size", "1", "--seq_len", "64", "--eval_len", str(eval_len),
            "--model_card", tiny["card"], "--platform", "local", "--beam", "4",
            "--length_penalty", "0.8", "--no_repeat_ngram_size", "3", "--repetition_penalty", "1.2",
            "--eos_token_id", str(EOT), "--work_dir", str(out), "--output_file", name]


def test_final_checkpoint_and_backbone_plus_adapter_match_the_reference(tiny, tmp_path, capsys, monkeypatch):
    from nlg import beam_search
    from nlg.beam_search import BeamSettings
    decoded = []
    real = beam_search.beam_search
    monkeypatch.setattr(beam_search, "beam_search",
                        lambda model, contexts, *a, **k: decoded.extend(map(tuple, contexts))
                        or real(model, contexts, *a, **k))
    lora_flags = ["--lora_dim", "2", "--lora_alpha", "4"]
    run_beam("gpt2_beam.py", common_args(tiny, tmp_path, "final.jsonl")
             + ["--init_checkpoint", tiny["dir"] / "model.final.pt"] + lora_flags)
    assert "13 lines, 5 distinct contexts" in capsys.readouterr().out
    assert sorted(decoded) == sorted(set(map(tuple, tiny["lines"])))  # each distinct context once
    run_beam("gpt2_beam_lora.py", common_args(tiny, tmp_path, "split.jsonl")
             + ["--init_checkpoint", tiny["dir"] / "backbone.bin",
                "--adapter_checkpoint", tiny["dir"] / "adapter.pt", "--decode_batch", "2"] + lora_flags)
    final = read_predictions(tmp_path / "final.jsonl")
    assert final == read_predictions(tmp_path / "split.jsonl")
    assert [r["id"] for r in final] == list(range(len(tiny["lines"])))
    assert list(final[0]) == ["id", "predict"]
    # the unmerged model, one context at a time: the reference's algorithm
    s = BeamSettings(beam=4, eval_len=10, length_penalty=0.8, no_repeat_ngram_size=3,
                     repetition_penalty=1.2, eos_token_ids=(50256, EOT))
    cache = {}
    for row, ctx in zip(final, tiny["lines"]):
        key = tuple(ctx)
        if key not in cache:
            cache[key] = reference_beam(tiny["model"], ctx, s)
        assert row["predict"] == cache[key]


METHODS = [
    ("gpt2_beam_lorma_plus.py", ["--lora_dim", "2", "--lora_alpha", "4"]),
    ("gpt2_beam_lorma_pi.py", ["--lora_dim", "2", "--lora_alpha", "4", "--lorma_mode", "post"]),
    ("gpt2_beam_mtlora.py", ["--lora_dim", "2", "--lora_alpha", "4", "--mtlora_structure", "CTCM"]),
    ("gpt2_beam_nola.py", ["--nola_rank", "2", "--nola_c", "1.0", "--nola_num_basis", "16"]),
    ("gpt2_beam.py", ["--nola_rank", "2", "--nola_c", "1.0", "--nola_num_basis", "16", "--qnola", "--qbits", "3"]),
]


@pytest.mark.parametrize("script,flags", METHODS, ids=[f"{s}{' q' if '--qnola' in f else ''}" for s, f in METHODS])
def test_every_method_decodes_merged_as_the_unmerged_model(tiny, tmp_path, script, flags):
    """The CLI merges each method's adapter before decoding; the result is the reference search
    on the unmerged model loaded from the same final checkpoint."""
    import loralib as lora
    from nlg.beam_search import BeamSettings
    from nlg.checkpoint import load_model_weights, training_state_dict
    from nlg.gpt2_beam import build_parser
    from nlg.model import GPT2LMModel, config_from_card
    args = build_parser(_preset(script)).parse_args(["--data", "x"] + flags)
    method = lora.method_config_from_args(args, default="none", pipeline="gpt2")
    ckpt = tmp_path / "model.final.pt"
    model = random_adapted_model(tiny["card"], method, seed=4, std=0.3)
    torch.save({"model_state_dict": training_state_dict(model)}, ckpt)
    run_beam(script, common_args(tiny, tmp_path, "p.jsonl") + ["--init_checkpoint", ckpt] + flags)
    unmerged = GPT2LMModel(config_from_card(tiny["card"], method=method))
    load_model_weights(unmerged, ckpt, require_adapter=True)
    unmerged.eval()
    s = BeamSettings(beam=4, eval_len=10, length_penalty=0.8, no_repeat_ngram_size=3,
                     repetition_penalty=1.2, eos_token_ids=(50256, EOT))
    want = {key: reference_beam(unmerged, list(key), s) for key in set(map(tuple, tiny["lines"]))}
    got = read_predictions(tmp_path / "p.jsonl")
    assert [r["predict"] for r in got] == [want[tuple(c)] for c in tiny["lines"]]


def test_errors_are_clear(tiny, tmp_path):
    lora_flags = ["--lora_dim", "2", "--lora_alpha", "4"]
    base = common_args(tiny, tmp_path, "x.jsonl")
    with pytest.raises(SystemExit, match="only adapter weights"):
        run_beam("gpt2_beam.py", base + ["--init_checkpoint", tiny["dir"] / "adapter.pt"] + lora_flags)
    with pytest.raises(SystemExit, match="needs its backbone"):
        run_beam("gpt2_beam.py", base + ["--adapter_checkpoint", tiny["dir"] / "adapter.pt"] + lora_flags)
    with pytest.raises(SystemExit, match="built without an adapter"):
        run_beam("gpt2_beam.py", base + ["--init_checkpoint", tiny["dir"] / "model.final.pt"])
    with pytest.raises(SystemExit, match="no adapter tensors"):
        run_beam("gpt2_beam.py", base + ["--init_checkpoint", tiny["dir"] / "backbone.bin"] + lora_flags)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"context": [1, 2], "completion": []}) + "\n"
                   + json.dumps({"context": [1, 99], "completion": []}) + "\n")
    argv = base + ["--init_checkpoint", tiny["dir"] / "model.final.pt"] + lora_flags
    argv[argv.index("--data") + 1] = str(bad)
    with pytest.raises(SystemExit, match=re.escape(f"{bad}:2: token id 99")):
        run_beam("gpt2_beam.py", argv)
    bad.write_text(json.dumps({"context": [], "completion": [3]}) + "\n")
    with pytest.raises(SystemExit, match=re.escape(f"{bad}:1: empty context")):
        run_beam("gpt2_beam.py", argv)
    assert not (tmp_path / "x.jsonl").exists()


def test_eos_ids(shared_data):
    from nlg.beam_run import settings_from_args
    from nlg.gpt2_beam import build_parser
    base = ["--data", "x"]
    s = settings_from_args(build_parser().parse_args(base + ["--eos_token_id", "628"]))
    assert s.eos_token_ids == (50256, 628)
    s = settings_from_args(build_parser().parse_args(base))
    assert s.eos_token_ids == (50256,)
    vocab = json.loads((shared_data / "vocab" / "encoder.json").read_text())
    s = settings_from_args(build_parser().parse_args(base + ["--vocab", str(shared_data / "vocab"),
                                                             "--eos_token_id", "7"]))
    assert s.eos_token_ids == (vocab["<|endoftext|>"], 7)


# ---------------------------------------------------------------------------- seed commands

CHANGED = {"--data", "--init_checkpoint", "--work_dir", "--model_card", "--eval_len"}
EXPECTED_METHOD = {"gpt2_beam_lorma_plus.py": ("lorma", "rri"), "gpt2_beam_lorma_pi.py": ("lorma", "shift"),
                   "gpt2_beam_mtlora.py": ("mtlora", None)}


def seed_beam_commands(shared_root):
    text = (shared_root / "seed_commands.md").read_text()
    out = []
    for block in re.findall(r"```\n(.*?)```", text, flags=re.S):
        if "src/gpt2_beam" not in block:
            continue
        tokens = shlex.split(block.replace("\\\n", " "))
        i = next((k for k, t in enumerate(tokens) if t.startswith("src/gpt2_beam")), None)
        if i is not None:
            out.append((tokens[:i], tokens[i][len("src/"):], tokens[i + 1:]))
    return out


def test_seed_beam_commands_run(shared_data, tmp_path):
    """Every beam command of seed_commands.md, as written but for paths, the model card (no GPT-2
    M weights here) and eval_len; MTLoRA's README flags also through gpt2_beam_mtlora.py, and
    LoRMA's through the LoRMA_pi entry point."""
    from nlg import encoder
    import loralib as lora
    from nlg.checkpoint import training_state_dict
    from nlg.gpt2_beam import build_parser

    enc = encoder.get_encoder(str(shared_data / "vocab"))
    lines = (shared_data / "e2e" / "valid.txt").read_text().splitlines()[:12]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"context": enc.encode(line.split("||")[0]) + [enc.eos_id],
                                        "completion": [enc.eos_id]}) + "\n" for line in lines))
    commands = seed_beam_commands(shared_data.parent)
    assert len(commands) == 4, commands
    variants = []
    for launcher, script, argv in commands:
        assert launcher[:3] == ["python", "-m", "torch.distributed.launch"], launcher
        variants.append((script, argv))
        if script == "gpt2_beam_lorma_plus.py":
            variants.append(("gpt2_beam_lorma_pi.py", argv))
        if script == "gpt2_beam.py" and "--lora_dim" in argv:
            variants.append(("gpt2_beam_mtlora.py", argv))
    for n, (script, argv) in enumerate(variants):
        kept = []
        for k, tok in enumerate(argv):
            if tok.startswith("--") and tok not in CHANGED:
                kept.append(tok)
                if k + 1 < len(argv) and not argv[k + 1].startswith("--"):
                    kept.append(argv[k + 1])
        args = build_parser(_preset(script)).parse_args(["--data", "x"] + kept)
        method = lora.method_config_from_args(args, default="none", pipeline="gpt2")
        if script in EXPECTED_METHOD:
            assert method.method == EXPECTED_METHOD[script][0]
        if "--nola_rank" in kept:  # NOLA's README: the generic script picks NOLA from its flags
            assert method.method == "nola"
        ckpt = tmp_path / f"model.{n}.pt"
        model = random_adapted_model("gpt2.tiny", method, seed=n, std=0.02)
        torch.save({"model_state_dict": training_state_dict(model)}, ckpt)
        work = tmp_path / f"work{n}"
        run_beam(script, kept + ["--data", data, "--init_checkpoint", ckpt, "--work_dir", work,
                                 "--model_card", "gpt2.tiny", "--eval_len", "6"])
        out = read_predictions(work / args.output_file)
        assert [r["id"] for r in out] == list(range(len(lines)))
        assert all(len(r["predict"]) == 6 for r in out)


def _preset(script):
    """The defaults an entry point passes to gpt2_beam.main (None for gpt2_beam.py itself)."""
    m = re.search(r"defaults=(\{.*?\})", (SRC / script).read_text())
    return ast.literal_eval(m.group(1)) if m else None


# ---------------------------------------------------------------------------- processes

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("launcher", ["torch.distributed.launch", "torch.distributed.run"])
def test_two_processes_write_the_same_file_as_one(tiny, tmp_path, launcher):
    argv = common_args(tiny, tmp_path, "two.jsonl") + [
        "--init_checkpoint", tiny["dir"] / "model.final.pt", "--lora_dim", "2", "--lora_alpha", "4",
        "--decode_batch", "1"]
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env["OMP_NUM_THREADS"] = "1"
    r = subprocess.run([sys.executable, "-m", launcher, "--nproc_per_node=2", "--master_addr=127.0.0.1",
                        f"--master_port={_free_port()}", str(SRC / "gpt2_beam.py")] + [str(a) for a in argv],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "world_size 2" in r.stdout and "backend gloo" in r.stdout
    argv[argv.index("--output_file") + 1] = "one.jsonl"
    run_beam("gpt2_beam.py", argv)
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()


@pytest.mark.parametrize("flag,dtype", [("--bf16", torch.bfloat16), ("--fp16", torch.float16)])
def test_half_precision_decoding_casts_the_merged_model_once(tiny, tmp_path, monkeypatch, flag, dtype):
    """--bf16 / --fp16: the model goes to its device, the adapter is merged there in fp32, then
    the merged model is cast once; no autocast is entered while decoding. The search's best
    scores stay as close to fp32's as those of the autocast decoding this replaces (the cast
    model also keeps its residual stream in the half dtype, where autocast kept it in fp32, so
    a near-tie may go the other way: see the README)."""
    import loralib as lora
    from nlg import beam_run, beam_search
    from nlg.beam_search import BeamSettings
    events = []
    real_merge, real_search = beam_run.lora.merge_all, beam_search.beam_search

    def merge(model):
        w = model.transformer.h[0].attn.c_attn.weight
        events.append(("merge", w.device.type, w.dtype))
        return real_merge(model)

    def search(model, *a, **k):
        events.append(("decode", next(model.parameters()).dtype))
        return real_search(model, *a, **k)

    class NoAutocast:
        def __init__(self, *a, **k):
            raise AssertionError("autocast entered while decoding")
    monkeypatch.setattr(beam_run.lora, "merge_all", merge)
    monkeypatch.setattr(beam_search, "beam_search", search)
    monkeypatch.setattr(torch, "autocast", NoAutocast)
    monkeypatch.setattr(torch.amp, "autocast", NoAutocast)
    run_beam("gpt2_beam.py", common_args(tiny, tmp_path, "half.jsonl") + [
        "--init_checkpoint", tiny["dir"] / "model.final.pt", "--lora_dim", "2", "--lora_alpha", "4", flag])
    assert events[0] == ("merge", "cpu", torch.float32)
    assert {e for e in events[1:]} == {("decode", dtype)}
    assert len(read_predictions(tmp_path / "half.jsonl")) == len(tiny["lines"])
    monkeypatch.undo()

    # the scores against fp32's, and against the autocast path's
    s = BeamSettings(beam=4, eval_len=10, length_penalty=0.8, no_repeat_ngram_size=3,
                     repetition_penalty=1.2, eos_token_ids=(EOT,))
    contexts = list(map(list, dict.fromkeys(map(tuple, tiny["lines"]))))
    model = random_adapted_model(tiny["card"], lora.MethodConfig(method="lora", r=2, alpha=4)).eval()
    model.load_state_dict(tiny["model"].state_dict())
    lora.merge_all(model)
    _, fp32 = beam_search.beam_search(model, contexts, s)
    with torch.autocast("cpu", dtype=dtype):
        _, autocast = beam_search.beam_search(model, contexts, s)
    from traincore import Precision
    cast = random_adapted_model(tiny["card"], lora.MethodConfig(method="lora", r=2, alpha=4)).eval()
    cast.load_state_dict(tiny["model"].state_dict())
    beam_run.ready_for_decoding(cast, torch.device("cpu"), Precision("cpu", dtype))
    with beam_run.cpu_products(torch.device("cpu"), dtype, False):
        _, once = beam_search.beam_search(cast, contexts, s)
    assert torch.isfinite(once).all()
    assert torch.allclose(once, fp32, rtol=0.02, atol=0.05), (once, fp32)
    assert (once - fp32).abs().max() <= 2 * (autocast - fp32).abs().max() + 0.01
