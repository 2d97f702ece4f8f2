"""Checkpoints record how they were trained: gpt2_beam.py builds the method from the file when
no method flag is given, and a flag that contradicts the file is an error naming both values."""

import pytest
import torch

from test_train_helpers import base_args, run_script, write_backbone, write_card, write_random_data


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("records")
    card = write_card(d)
    data = write_random_data(d / "train.jsonl", 12)
    backbone = write_backbone(d / "backbone.bin", card)
    runs = {}
    for name, script, flags in (
            ("pi", "gpt2_ft_lorma_pi.py", {"--lora_dim": 2, "--lora_alpha": 8}),
            ("nola", "gpt2_ft.py", {"--nola_rank": 2, "--nola_c": 2.0, "--nola_num_basis": 8})):
        w = d / name
        run_script(script, base_args(d, data, card, backbone, w, **flags,
                                     **{"--max_step": 2, "--save_interval": 1}))
        runs[name] = w / "model.2.pt"
    return {"dir": d, "card": card, "data": data, **runs}


def beam(trained, out, script, ckpt, *flags):
    from test_beam_cli import run_beam
    run_beam(script, ["--data", trained["data"], "--batch_size", "2", "--seq_len", "64",
                      "--eval_len", "4", "--model_card", trained["card"], "--beam", "2",
                      "--init_checkpoint", ckpt, "--work_dir", out, "--output_file", "p.jsonl",
                      "--eos_token_id", "210", *map(str, flags)])   # the tiny vocabulary's end
    return (out / "p.jsonl").read_text()


def test_every_checkpoint_records_its_method(trained):
    for path in (trained["pi"], trained["pi"].with_name("model.1.pt")):
        record = torch.load(path, weights_only=True)["loralib"]
        assert record["method"] == "lorma" and record["options"]["kind"] == "shift"
        assert record["pipeline"] == "gpt2" and record["r"] == 2 and record["alpha"] == 8.0
        assert "loralib_version" in record
    nola = torch.load(trained["nola"], weights_only=True)["loralib"]
    assert nola["method"] == "nola" and nola["options"]["num_basis_A"] == 8


def test_beam_builds_the_method_from_the_checkpoint_alone(trained, tmp_path):
    with_flags = beam(trained, tmp_path / "a", "gpt2_beam_lorma_pi.py", trained["pi"],
                      "--lora_dim", 2, "--lora_alpha", 8)
    assert beam(trained, tmp_path / "b", "gpt2_beam.py", trained["pi"]) == with_flags
    # a preset entry point takes the rank from the file too
    assert beam(trained, tmp_path / "c", "gpt2_beam_lorma_pi.py", trained["pi"]) == with_flags
    assert beam(trained, tmp_path / "d", "gpt2_beam.py", trained["nola"]) == \
        beam(trained, tmp_path / "e", "gpt2_beam.py", trained["nola"], "--nola_rank", 2,
             "--nola_c", 2.0, "--nola_num_basis", 8)


@pytest.mark.parametrize("key,script,flags,match", [
    ("pi", "gpt2_beam_lorma_plus.py", ["--lora_dim", 2, "--lora_alpha", 8],
     "kind 'rri' \\(checkpoint: 'shift'\\)"),
    ("pi", "gpt2_beam_lorma_pi.py", ["--lora_dim", 2, "--lora_alpha", 1000],
     "alpha 1000.0 \\(checkpoint: 8.0\\)"),
    ("pi", "gpt2_beam.py", ["--lora_dim", 2, "--lora_alpha", 8],
     "method 'lora' \\(checkpoint: 'lorma'\\)"),
    ("nola", "gpt2_beam.py", ["--nola_rank", 2, "--nola_c", 1.0, "--nola_num_basis", 8],
     "alpha 1.0 \\(checkpoint: 2.0\\)"),
    ("nola", "gpt2_beam.py", ["--nola_rank", 2, "--nola_c", 2.0, "--nola_num_basis", 16],
     "num_basis_A 16 \\(checkpoint: 8\\)"),
])
def test_flags_that_contradict_the_checkpoint_are_errors(trained, tmp_path, key, script, flags,
                                                         match):
    with pytest.raises(SystemExit, match=match):
        beam(trained, tmp_path, script, trained[key], *flags)
