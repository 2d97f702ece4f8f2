"""A fifth method registered from one file (tests/toy_method.py, parameters named toy_*) goes
through the contract matrix, GPT-2 training, saving, beam search from the checkpoint alone and
an NLU step, with no other change to the code."""
import pytest
import torch

import loralib as lora
import loralib_cases
import test_loralib_contract as contract
import toy_method
from test_train_helpers import base_args, run_script, write_backbone, write_card, write_random_data


@pytest.fixture(scope="module", autouse=True)
def toy():
    toy_method.register()
    loralib_cases.EXTRA_REFERENCES[toy_method.ToyLinear] = toy_method.reference
    yield
    lora.unregister("toy")
    del loralib_cases.EXTRA_REFERENCES[toy_method.ToyLinear]


CONTRACT = [contract.test_identity_at_init_where_the_official_method_has_it,
            contract.test_activation_space_equals_weight_space_formula,
            contract.test_merge_matches_and_unmerge_restores_exactly,
            contract.test_only_adapter_parameters_train,
            contract.test_adapter_state_dict_roundtrips_bit_exactly,
            contract.test_adapter_state_dict_missing_or_unexpected_key_is_an_error]


@pytest.mark.parametrize("layout", list(loralib_cases.LAYOUTS))
@pytest.mark.parametrize("check", CONTRACT, ids=[c.__name__[5:] for c in CONTRACT])
def test_toy_method_passes_the_contract_matrix(check, layout):
    check("toy", {}, layout)
    contract.test_adapter_holds_only_adapter_state("toy", {})
    contract.test_every_registered_method_is_in_the_matrix()


def test_toy_method_trains_saves_decodes_and_runs_nlu(tmp_path, shared_data):
    card = write_card(tmp_path)
    data = write_random_data(tmp_path / "train.jsonl", 12)
    backbone = write_backbone(tmp_path / "backbone.bin", card)
    work = tmp_path / "w"
    run_script("gpt2_ft.py", base_args(tmp_path, data, card, backbone, work,
                                       **{"--method": "toy", "--lora_dim": 2, "--lora_alpha": 4,
                                          "--max_step": 2, "--lr": 0.05}))
    ckpt = torch.load(work / "model.2.pt", weights_only=True)
    keys = [k for k in ckpt["model_state_dict"] if "toy_" in k]
    assert len(keys) == 2 * 3 and ckpt["loralib"]["method"] == "toy"   # layers x (down, up, gate)
    assert ckpt["model_state_dict"][keys[0]].abs().sum() > 0
    # beam search from the checkpoint alone: no method flag
    from test_beam_cli import run_beam
    run_beam("gpt2_beam.py", ["--data", data, "--batch_size", "2", "--seq_len", "64",
                              "--eval_len", "3", "--model_card", card, "--beam", "2",
                              "--init_checkpoint", work / "model.2.pt", "--work_dir", work,
                              "--output_file", "p.jsonl", "--eos_token_id", "210"])
    assert len((work / "p.jsonl").read_text().splitlines()) == 12
    # an NLU step
    from nlu import run_glue
    out = tmp_path / "nlu"
    run_glue.main(["--task_name", "rte", "--data_dir", str(shared_data / "glue"),
                   "--tokenizer_dir", str(shared_data / "vocab"), "--model_card", "roberta-tiny",
                   "--random_init", "--max_seq_length", "32", "--max_train_samples", "8",
                   "--max_eval_samples", "8", "--per_device_train_batch_size", "4",
                   "--max_steps", "1", "--output_dir", str(out), "--method", "toy",
                   "--lora_dim", "2"])
    sd = torch.load(out / "pytorch_model.bin", weights_only=True)
    assert sorted({k.rsplit(".", 1)[-1] for k in sd if "toy_" in k}) == \
        ["toy_down", "toy_gate", "toy_up"]


def test_a_registered_method_gets_task_scripts(tmp_path):
    import importlib.util
    from test_train_helpers import ROOT
    for path, argv in ((ROOT / "NLG" / "scripts" / "make_scripts.py", ["--out_dir", str(tmp_path)]),
                       (ROOT / "NLU" / "scripts" / "make_scripts.py", None)):
        spec = importlib.util.spec_from_file_location(f"gen_{path.parts[-3]}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod.main(argv) if argv else mod.main(str(tmp_path))
    text = (tmp_path / "e2e_toy.sh").read_text()
    assert 'METHOD_ARGS="--method toy --lora_dim 4' in text     # LoRA's settings by default
    assert "--method toy --lora_dim 8" in (tmp_path / "roberta_base_toy_rte.sh").read_text()
