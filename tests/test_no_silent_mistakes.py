"""No silent mistake (issue 25, item 2): an empty completion or context is an error naming the
file and line; a model whose vocabulary has no end-of-text id for the decoder is an error
naming the flag to give; every method flag given to gpt2_beam.py (and run_glue.py beside a
recorded adapter) agrees with the checkpoint or is an error naming the flag and both values,
and messages name only the flags the user gave."""
import json
import re

import pytest
import torch

import loralib as lora
from test_beam_cli import random_adapted_model, read_predictions, run_beam
from test_train_helpers import (TINY_CARD, base_args, run_script, write_backbone, write_card,
                                write_random_data)

EOT = TINY_CARD["vocab_size"] - 1          # write_random_data's end id


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from nlg.checkpoint import method_record, training_state_dict
    d = tmp_path_factory.mktemp("silent")
    card = write_card(d)
    data = write_random_data(d / "data.jsonl", 6)
    ckpts = {}
    for name, cfg in (("lora", lora.MethodConfig(method="lora", r=2, alpha=4.0, pipeline="gpt2")),
                      ("icfm", lora.MethodConfig(method="mtlora", r=2, alpha=4.0,
                                                 options={"structure": "ICFM"}, pipeline="gpt2"))):
        model = random_adapted_model(card, cfg, seed=1, std=0.2)
        torch.save({"model_state_dict": training_state_dict(model), **method_record(cfg)},
                   d / f"{name}.pt")
        ckpts[name] = d / f"{name}.pt"
    return {"dir": d, "card": card, "data": data, "backbone": write_backbone(d / "b.bin", card),
            **ckpts}


def beam(tiny, out, ckpt, *flags, script="gpt2_beam.py", eos=True):
    run_beam(script, ["--data", tiny["data"], "--seq_len", "64", "--eval_len", "6",
                      "--model_card", tiny["card"], "--beam", "2", "--init_checkpoint", ckpt,
                      "--work_dir", out, "--output_file", "p.jsonl"]
             + (["--eos_token_id", str(EOT)] if eos else []) + [str(f) for f in flags])
    return read_predictions(out / "p.jsonl")


# ---------------------------------------------------------------------------- data

def _lines(path, rows):
    path.write_text("".join(json.dumps({"context": c, "completion": d}) + "\n" for c, d in rows))
    return path


def test_an_empty_completion_or_context_is_an_error_naming_file_and_line(tiny, tmp_path):
    """Before: an empty completion trained with loss 0 and saved model.5.pt (exit 0)."""
    bad = _lines(tmp_path / "bad.jsonl", [([1, 2, 3], [4, EOT]), ([1, 2, 3], [])])
    with pytest.raises(SystemExit, match=re.escape(f"gpt2_ft: {bad}:2: empty completion")) as e:
        run_script("gpt2_ft.py", base_args(tmp_path, str(bad), tiny["card"], tiny["backbone"],
                                           tmp_path / "w", **{"--max_step": 5}))
    assert e.value.code == 2 and not list((tmp_path / "w").glob("model.*.pt"))
    ctx = _lines(tmp_path / "ctx.jsonl", [([1, 2], [4, EOT]), ([5], [6]), ([], [1, 2, EOT])])
    with pytest.raises(SystemExit, match=re.escape(f"{ctx}:3: empty context")):
        run_script("gpt2_ft.py", base_args(tmp_path, str(ctx), tiny["card"], tiny["backbone"],
                                           tmp_path / "c", **{"--max_step": 1}))
    # the joint LM (plain text) has no context by design: every token is a target
    from nlg.data_utils import FT_Dataset
    assert len(FT_Dataset(str(ctx), 2, 32, joint_lm=True)) == 3
    with pytest.raises(ValueError, match=re.escape(f"{bad}:2: empty completion")):
        FT_Dataset(str(bad), 2, 32, joint_lm=True)


def test_a_vocabulary_without_an_end_id_is_an_error_naming_the_flag(tiny, tmp_path, capsys):
    """Before: a custom-vocabulary card without --vocab printed "end ids: []" and decoded every
    context to --eval_len."""
    with pytest.raises(SystemExit, match=r"no end-of-text id in the model's vocabulary "
                                         r"\(vocab_size 211.*give --vocab DIR.*--eos_token_id ID"):
        beam(tiny, tmp_path / "a", tiny["lora"], eos=False)
    assert not (tmp_path / "a" / "p.jsonl").exists()
    vocab = tmp_path / "vocab"            # a vocabulary whose <|endoftext|> the model lacks
    vocab.mkdir()
    (vocab / "encoder.json").write_text(json.dumps({"a": 0, "<|endoftext|>": 500}))
    (vocab / "vocab.bpe").write_text("#version: 0.2\n")
    with pytest.raises(SystemExit, match=r"--vocab .*vocab: its <\|endoftext\|> is id 500, "
                                         r"outside the model's vocabulary \(vocab_size 211"):
        beam(tiny, tmp_path / "b", tiny["lora"], "--vocab", vocab, eos=False)
    # with an end id the model has it decodes, says which ids end a text (the default 50256
    # is outside this vocabulary) and records them beside the predictions
    capsys.readouterr()
    out = beam(tiny, tmp_path / "c", tiny["lora"])
    assert len(out) == 6
    log = capsys.readouterr().out         # a short header, not a dump of every setting
    assert f"end ids: [{EOT}] ([50256] outside the vocabulary: ignored)" in log
    assert "    - " not in log and len(log.splitlines()) < 10, log
    record = json.loads((tmp_path / "c" / "p.settings.json").read_text())
    assert record["end_ids"] == [EOT] and record["settings"]["eos_token_id"] == [EOT]


# ---------------------------------------------------------------------------- method flags

AGREEING = [
    ("lora", ["--lora_alpha", "4"]), ("lora", ["--lora_dim", "2"]),
    ("lora", ["--method", "lora", "--lora_dim", "2", "--lora_alpha", "4"]),
    ("icfm", ["--mtlora_structure", "ICFM"]),             # before: refused as "method 'none'"
    ("icfm", ["--method", "mtlora", "--lora_alpha", "4"]),
]


@pytest.mark.parametrize("ckpt,flags", AGREEING, ids=[" ".join(f) for _, f in AGREEING])
def test_flags_that_agree_with_the_checkpoint_decode_as_the_checkpoint_alone(tiny, tmp_path,
                                                                            ckpt, flags):
    assert beam(tiny, tmp_path / "f", tiny[ckpt], *flags) == beam(tiny, tmp_path / "n", tiny[ckpt])


# (checkpoint, script, flags, the error, text it must not hold: flags nobody gave, defaults)
CLASHING = [
    # before: ignored, the checkpoint's alpha 4 decoded
    ("lora", "gpt2_beam.py", ["--lora_alpha", "16"],
     "--lora_alpha 16 gives alpha 16.0 (checkpoint: 4.0)", ["--lora_dim", "gives r "]),
    # before: also blamed "alpha 128.0", a default nobody gave
    ("lora", "gpt2_beam.py", ["--lora_dim", "4"], "--lora_dim 4 gives r 4 (checkpoint: 2)",
     ["alpha", "128"]),
    ("lora", "gpt2_beam.py", ["--lora_dim", "4", "--lora_alpha", "16"],
     "--lora_dim 4 gives r 4 (checkpoint: 2); --lora_alpha 16 gives alpha 16.0 (checkpoint: 4.0)",
     []),
    # before: "NOLA takes its rank from --nola_rank (or --lora_rank), not --lora_dim"
    ("lora", "gpt2_beam.py", ["--method", "nola", "--nola_rank", "8"],
     "--method nola gives method 'nola' (checkpoint: 'lora')", ["--lora_dim", "--lora_rank"]),
    ("lora", "gpt2_beam.py", ["--mtlora_structure", "ICFM"],
     "--mtlora_structure ICFM gives method 'mtlora' (checkpoint: 'lora')", ["'none'"]),
    ("lora", "gpt2_beam.py", ["--mult_lora_alpha", "4"],      # LoRMA's spelling, as typed
     "--mult_lora_alpha 4 gives method 'lorma' (checkpoint: 'lora')", ["--lora_alpha"]),
    ("icfm", "gpt2_beam.py", ["--mtlora_structure", "CTCM"],
     "--mtlora_structure CTCM gives structure 'CTCM' (checkpoint: 'ICFM')", ["shared_t"]),
    ("icfm", "gpt2_beam.py", ["--mtlora_per_projection_t"],
     "--mtlora_per_projection_t gives shared_t False (checkpoint: True)", ["structure"]),
    ("icfm", "gpt2_beam_lorma_plus.py", [],
     "--method lorma (preset by gpt2_beam_lorma_plus.py) gives method 'lorma' (checkpoint: "
     "'mtlora')", []),
]


@pytest.mark.parametrize("ckpt,script,flags,said,unsaid", CLASHING,
                         ids=[f"{c} {s} {' '.join(f)}" for c, s, f, _, _ in CLASHING])
def test_flags_that_contradict_the_checkpoint_name_themselves_and_both_values(
        tiny, tmp_path, ckpt, script, flags, said, unsaid):
    with pytest.raises(SystemExit) as e:
        beam(tiny, tmp_path, tiny[ckpt], *flags, script=script)
    line = str(e.value)
    assert e.value.code == 2 and line.startswith("gpt2_beam: ") and "\n" not in line
    assert said in line, line
    for text in unsaid:
        assert text not in line, line


def test_every_registered_method_flag_says_what_it_sets():
    """A flag missing from method_flags.FLAG_KEYS could never disagree with a checkpoint."""
    from nlg.method_flags import FLAG_KEYS, given_flags
    from nlg.gpt2_beam import build_parser
    dests = set()
    for name in lora.families():
        cli = lora.get_spec(name).cli
        dests |= set(cli.flags) | {dest for dest, _ in cli.aliases.values()}
    assert dests - set(FLAG_KEYS) == set()
    # and every method flag of the parser is seen as given when it has a value
    args = build_parser().parse_args(["--data", "x", "--lora_rank", "3", "--xtuning_alpha", "2",
                                      "--qnola", "--do_pi", "True"])
    assert {g.flag: g.value for g in given_flags(args)} == {
        "--lora_rank": 3, "--xtuning_alpha": 2.0, "--qnola": True, "--do_pi": True}


def test_nlu_flags_beside_a_recorded_adapter_name_themselves(tmp_path):
    """run_glue.py --adapter_checkpoint with a record: the same rule (glue_run.resolve_method)."""
    from nlu import glue_run, run_glue
    out = tmp_path / "adapter"
    out.mkdir()
    stored = lora.MethodConfig(method="lorma_pi", r=4, alpha=8.0, pipeline="roberta")
    (out / "adapter_config.json").write_text(json.dumps(glue_run.method_record(
        stored, type("Card", (), {"to_dict": lambda self: {}})())))
    (out / "pytorch_model.bin").write_text("")

    def resolve(*flags):
        args = run_glue.build_parser().parse_args(
            ["--task_name", "rte", "--output_dir", str(tmp_path / "o"), "--adapter_checkpoint",
             str(out / "pytorch_model.bin"), *flags])
        return glue_run.resolve_method(args)

    assert resolve().to_dict() == stored.to_dict()
    assert resolve("--lora_alpha", "8").to_dict() == stored.to_dict()
    with pytest.raises(ValueError, match=r"--lora_alpha 16 gives alpha 16\.0 \(checkpoint: 8\.0\)"
                                         r"\. Drop the method flags") as e:
        resolve("--lora_alpha", "16")
    assert "lora_dim" not in str(e.value) and "gives r " not in str(e.value)
    with pytest.raises(ValueError, match=r"--lorma_type rri gives kind 'rri' \(checkpoint: "
                                         r"'shift'\)"):
        resolve("--lorma_type", "rri")
