"""--compile end to end on a CPU: gpt2_ft.py trains through torch.compile, gpt2_beam.py decodes
through it, and both give what the eager runs give. The aot_eager backend traces and splits
the graphs as inductor would but runs them with eager kernels: the check without a minute of
C++ code generation per graph on a small CPU (tests/test_compile.py checks the model's graphs)."""
import pytest
import torch

from test_beam_cli import read_predictions, run_beam
from test_train_helpers import base_args, read_log, run_script, write_backbone, write_card, write_random_data


@pytest.mark.slow
def test_compiled_training_and_decoding_equal_eager(tmp_path):
    from torch._dynamo.utils import counters
    card = write_card(tmp_path)
    data = write_random_data(tmp_path / "train.jsonl", 12, seed=2)
    backbone = write_backbone(tmp_path / "backbone.bin", card)
    flags = {"--lora_dim": 4, "--lora_alpha": 16, "--max_step": 2, "--lr": 0.02}
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile", "aot_eager"])):
        work = tmp_path / name
        breaks = sum(counters["graph_break"].values())
        run_script("gpt2_ft.py", base_args(tmp_path, data, card, backbone, work, **flags) + extra)
        runs[name] = work
    assert sum(counters["graph_break"].values()) == breaks      # the training step: one graph
    le, lc = read_log(runs["eager"]), read_log(runs["compiled"])
    assert [r["step"] for r in lc] == [1, 2]
    for a, b in zip(le, lc):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6)
    fe = torch.load(runs["eager"] / "model.2.pt", weights_only=True)["model_state_dict"]
    fc = torch.load(runs["compiled"] / "model.2.pt", weights_only=True)["model_state_dict"]
    assert all(torch.allclose(fe[k], fc[k], rtol=1e-4, atol=1e-6) for k in fe)

    beam = ["--data", data, "--seq_len", "64", "--eval_len", "8", "--model_card", card,
            "--init_checkpoint", runs["eager"] / "model.2.pt", "--lora_dim", "4",
            "--lora_alpha", "16", "--beam", "3", "--eos_token_id", "210", "--decode_batch", "5",
            "--work_dir", tmp_path]
    run_beam("gpt2_beam.py", beam + ["--output_file", "eager.jsonl"])
    breaks = sum(counters["graph_break"].values())
    graphs = counters["stats"]["unique_graphs"]
    run_beam("gpt2_beam.py", beam + ["--output_file", "compiled.jsonl", "--compile", "aot_eager"])
    assert read_predictions(tmp_path / "compiled.jsonl") == read_predictions(tmp_path / "eager.jsonl")
    # the decoding step is one graph: no break; two compilations for the whole run (the first
    # step's, then `start` symbolic), whatever the number of batches (here 3) and steps
    assert sum(counters["graph_break"].values()) == breaks
    assert counters["stats"]["unique_graphs"] - graphs == 2
