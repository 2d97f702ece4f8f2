"""Every training command of ../shared/seed_commands.md runs as written, with only the data,
checkpoint and output paths, the model card (no GPT-2 M weights here) and the run length changed;
its final checkpoint then loads with --init_checkpoint alone, as the beam commands do."""
import json
import re
import shlex

import pytest

from test_train_helpers import run_script, write_backbone

CHANGED = {"--train_data", "--valid_data", "--init_checkpoint", "--work_dir", "--model_card",
           "--max_epoch", "--save_interval"}


def seed_training_commands(shared_root):
    text = (shared_root / "seed_commands.md").read_text()
    cmds = []
    for block in re.findall(r"```\n(.*?)```", text, flags=re.S):
        line = block.replace("\\\n", " ")
        if "src/gpt2_ft" in line:
            cmds.append(shlex.split(line))
    return cmds


def _options(tokens):
    """(script, [(flag, value or None)]) from `python -m torch.distributed.launch ... src/x.py ...`."""
    i = next(k for k, t in enumerate(tokens) if t.startswith("src/gpt2_ft"))
    script, rest, opts = tokens[i][len("src/"):], tokens[i + 1:], []
    for k, t in enumerate(rest):
        if t.startswith("--"):
            nxt = rest[k + 1] if k + 1 < len(rest) else None
            opts.append((t, None if nxt is None or nxt.startswith("--") else nxt))
    return script, opts


@pytest.fixture(scope="module")
def setup(shared_data, tmp_path_factory):
    from nlg import encoder
    d = tmp_path_factory.mktemp("seed")
    enc = encoder.get_encoder(str(shared_data / "vocab"))
    lines = (shared_data / "e2e" / "valid.txt").read_text().splitlines()[::400][:12]
    data = d / "e2e.jsonl"
    with open(data, "w") as f:
        for line in lines:
            mr, ref = line.split("||")
            f.write(json.dumps({"context": enc.encode(mr) + [enc.eos_id],
                                "completion": enc.encode(" " + ref.strip()) + [enc.eos_id]}) + "\n")
    return {"dir": d, "data": str(data),
            "backbone": write_backbone(d / "gpt2-tiny-pytorch_model.bin", "gpt2.tiny")}


def _variants(shared_root):
    out = []
    for tokens in seed_training_commands(shared_root):
        script, opts = _options(tokens)
        out.append((script, opts))
        if script == "gpt2_ft_lorma_plus.py":
            out.append(("gpt2_ft_lorma_pi.py", opts))  # the paper's other variant, same flags
        if script == "gpt2_ft.py" and any(f == "--lora_dim" for f, _ in opts):
            # MTLoRA's README: the same flags, its method picked by the entry point
            out.append(("gpt2_ft_mtlora.py", opts + [("--mtlora_structure", "DTSM")]))
            out.append(("gpt2_ft_lora.py", opts + [("--adapt_targets", "q,k,v,c_proj,c_fc,mlp_proj")]))
    return out


EXPECTED = {"gpt2_ft_lorma_plus.py": ("lorma", {"kind": "rri"}),
            "gpt2_ft_lorma_pi.py": ("lorma", {"kind": "shift"}),
            "gpt2_ft_mtlora.py": ("mtlora", {"structure": "DTSM"})}


def test_seed_training_commands_run(setup, shared_data, tmp_path):
    import loralib as lora
    from nlg.checkpoint import load_model_weights
    from nlg.gpt2_ft import build_parser
    from nlg.model import GPT2LMModel, config_from_card

    variants = _variants(shared_data.parent)
    assert len(variants) == 7, [v[0] for v in variants]  # 4 seed lines + 3 variants
    seen = []
    for n, (script, opts) in enumerate(variants):
        work = tmp_path / f"run{n}"
        argv = []
        for flag, value in opts:
            if flag not in CHANGED:
                argv += [flag] + ([value] if value is not None else [])
        argv += ["--train_data", setup["data"], "--valid_data", setup["data"],
                 "--init_checkpoint", setup["backbone"], "--model_card", "gpt2.tiny",
                 "--work_dir", str(work), "--max_step", "2", "--save_interval", "1",
                 "--no_progress", "--no_tensorboard"]
        run_script(script, argv)
        info = json.loads((work / "run_info.json").read_text())
        seen.append(info["method"])
        if script in EXPECTED:
            method, opts_expected = EXPECTED[script]
            assert info["method"] == method
            for k, v in opts_expected.items():
                assert repr(v) in info["method_config"], (script, info["method_config"])
        assert (work / "model.1.pt").exists() and (work / "model.2.pt").exists()
        # the final checkpoint alone rebuilds the trained model (beam's --init_checkpoint)
        args = build_parser().parse_args(["--train_data", "x", "--valid_data", "x"] + [
            a for f, v in opts if f.startswith(("--lora", "--nola", "--qnola", "--qbits",
                                                "--mtlora", "--adapt"))
            for a in ([f] + ([v] if v is not None else []))])
        if script in EXPECTED:
            args.method = EXPECTED[script][0]
            for k, v in EXPECTED[script][1].items():
                setattr(args, {"kind": "lorma_type", "structure": "mtlora_structure"}[k], v)
        cfg = lora.method_config_from_args(args, pipeline="gpt2")
        m = GPT2LMModel(config_from_card("gpt2.tiny", method=cfg))
        got = load_model_weights(m, init_checkpoint=work / "model.2.pt", require_adapter=True)
        assert got["adapter_loaded"] > 0 and got["backbone_missing"] == 0
        if script == "gpt2_ft_lora.py":
            # all six projections adapted: r * (in + out) per target, q/k/v slices of c_attn
            E = 64
            per_layer = 3 * 4 * (E + E) + 4 * (E + E) + 4 * (E + 4 * E) + 4 * (4 * E + E)
            assert info["trainable_params"] == 2 * per_layer
    assert seen.count("nola") == 2 and seen.count("lorma") == 2 and "lora" in seen
