"""benchmarks/gpu_check.sh in its CPU mode: every step runs on a tiny model and the CUDA-only
parts are skipped with a line saying so (on a GPU machine the same script reports the figures)."""
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_a_cpu_and_says_what_it_skipped(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}    # the CPU mode even on a GPU machine
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "skipped: no CUDA device" in r.stdout and "skipped: NCCL" in r.stdout
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["cuda"] is False and len(rep["skipped"]) == 2
    assert [t["run"] for t in rep["train"]] == ["fp32", "bf16", "fp16_scaler", "torchrun_1proc"]
    for t in rep["train"]:
        assert t["tokens_per_s"] > 0 and math.isfinite(t["final_loss"]) and 0 < t["mfu"] < 1
        assert Path(t["checkpoint"]).is_file()
    assert rep["beam"]["predictions"] == rep["beam"]["contexts"] == 12
    assert rep["beam"]["merged_layers"] == 2           # the LoRA (q, v) of both layers, merged
    assert rep["ddp_one_process"] == {"backend": "gloo", "all_reduce_and_ddp_step": True}
    lines = (tmp_path / "beam" / "predict.jsonl").read_text().splitlines()
    assert len(lines) == 12 and all(len(json.loads(x)["predict"]) == 8 for x in lines)
