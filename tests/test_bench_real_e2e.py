"""benchmarks/bench_real_e2e.py's data slices, settings and errors (the runs themselves take an
hour on a real model: the benchmark is run by hand, its table is in the README)."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_real_e2e as bench  # noqa: E402

MRS = [f"name : R{i} | food : F{i % 3}" for i in range(12)]


@pytest.fixture
def e2e(tmp_path):
    """An E2E split in both formats: 12 MRs with 1-3 references each."""
    pairs = [(mr, f"R{i} serves F{i % 3} food number {k} .") for i, mr in enumerate(MRS)
             for k in range(1 + i % 3)]
    jsonl = tmp_path / "valid_formatted.jsonl"
    jsonl.write_text("".join(json.dumps({"context": c, "completion": r}) + "\n" for c, r in pairs))
    txt = tmp_path / "valid.txt"
    txt.write_text("".join(f"{c}||{r} \n" for c, r in pairs))
    return pairs, jsonl, txt


def test_both_e2e_formats_read_alike_and_bad_lines_are_named(e2e, tmp_path):
    pairs, jsonl, txt = e2e
    assert bench.read_examples(str(jsonl)) == pairs
    assert [(c, r.strip()) for c, r in bench.read_examples(str(txt))] == pairs
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{MRS[0]}||ok\nno separator here\n")
    with pytest.raises(ValueError, match=rf"{bad}:2: expected 'MR\|\|REF'"):
        bench.read_examples(str(bad))
    badj = tmp_path / "bad.jsonl"
    badj.write_text('{"context": "a", "completion": "b"}\n{"context": "a"}\n')
    with pytest.raises(ValueError, match=rf"{badj}:2: expected"):
        bench.read_examples(str(badj))


def test_the_evaluation_slice_keeps_every_reference_of_its_mrs(e2e):
    pairs = e2e[0]
    got = bench.eval_slice(pairs, 5)
    mrs = {c for c, _ in got}
    assert len(mrs) == 5
    assert got == [p for p in pairs if p[0] in mrs]            # all their lines, file order
    assert bench.eval_slice(pairs, 5) == got                   # seeded
    assert bench.eval_slice(pairs, 5, seed=1) != got
    with pytest.raises(ValueError, match="--eval_mrs 13: the file has 12 distinct MRs"):
        bench.eval_slice(pairs, 13)


def test_training_and_validation_lines_are_drawn_once(e2e):
    pairs = e2e[0]
    train, valid = bench.train_slice(pairs, 16, 4)
    assert len(train) == 16 and len(valid) == 4
    assert len(set(train + valid)) == 20 and set(train + valid) <= set(pairs)
    assert len(pairs) == 24
    with pytest.raises(ValueError, match="21 training \\+ 4 validation lines asked, the train "
                                         "split has 24"):
        bench.train_slice(pairs, 21, 4)


def test_every_row_runs_its_own_script_with_the_shared_schedule():
    for name in bench.DEFAULT_METHODS.split(","):
        lr, source = bench.script_lr(bench.script_of(name))
        assert float(lr) > 0 and source                        # cited in the script
        env = bench.row_env(name, 200)
        assert env["MAX_STEP"] == "200" and env["WARMUP_STEP"] == "20" and "LR" not in env
        assert {k: env[k] for k in bench.SHARED} == bench.SHARED
    base = bench.row_env("base", 200)       # LoRA at learning rate 0: B stays 0, the base model
    assert base["LR"] == "0" and base["MAX_STEP"] == "1"
    assert bench.script_of("base").endswith("e2e_lora.sh")
    with pytest.raises(ValueError, match="no script .*e2e_loar.sh \\(variants: .*lora"):
        bench.script_of("loar")
