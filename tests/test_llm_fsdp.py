"""Adapters under FSDP (two gloo processes on the CPU): training equals one process on the
same global batch, the adapter that every rank gathers (and rank 0 saves) equals the
one-process adapter, merging a sharded model is refused with what to do, and merging the saved
adapter on an unsharded copy gives the one-process merged model. FSDP1 without
use_orig_params is refused by name. The ranks are forked from this process (tests/
llm_fsdp_worker.py), so that no rank pays torch's import."""
import json
import socket

import pytest
import torch
import torch.multiprocessing as mp

import llm_fsdp_worker as worker

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(),
                                reason="torch without torch.distributed")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(mode, method, out):
    out.mkdir(parents=True)
    if mode == "none":
        worker.main(mode, method, out)
    else:
        mp.start_processes(worker.spawned, args=(2, _free_port(), mode, method, str(out)),
                           nprocs=2, start_method="fork")
    return out


def _tensors(folder):
    from loralib.adapter_io import _load_tensors
    return _load_tensors(str(folder))


@pytest.mark.parametrize("mode", ["fsdp2", "fsdp1"])
@pytest.mark.parametrize("method", ["lorma", "nola"])
def test_fsdp_trains_saves_and_merges_as_one_process(tmp_path, mode, method):
    one = _run("none", method, tmp_path / "one")
    two = _run(mode, method, tmp_path / "two")
    assert json.loads((two / "losses.json").read_text()) == pytest.approx(
        json.loads((one / "losses.json").read_text()), rel=1e-6)
    errors = json.loads((two / "errors.json").read_text())
    assert "save" not in errors
    assert f"sharded by {mode.upper()}" in errors["merge"] and "save the adapter" in \
        errors["merge"] and "load_adapter" in errors["merge"]
    want = torch.load(one / "state_rank0.pt", weights_only=True)
    for rank in (0, 1):    # every rank gathered the whole adapter, on the CPU
        got = torch.load(two / f"state_rank{rank}.pt", weights_only=True)
        assert got.keys() == want.keys()
        for k in want:
            assert got[k].device.type == "cpu" and got[k].dtype == want[k].dtype
            torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-6)
    saved, ref = _tensors(two / "adapter"), _tensors(one / "adapter")
    assert saved.keys() == ref.keys() and all(saved[k].numel() > 0 for k in saved)
    for k in ref:
        torch.testing.assert_close(saved[k], ref[k], rtol=1e-6, atol=1e-6)
    meta = json.loads((two / "adapter" / "adapter_config.json").read_text())["loralib"]
    assert meta["base_model"]["class"] == "Sequential" and meta["modules"] == ["0", "2", "4"]
    torch.testing.assert_close(torch.load(two / "merged_out.pt", weights_only=True),
                               torch.load(one / "merged_out.pt", weights_only=True),
                               rtol=1e-5, atol=1e-6)


def test_fsdp1_without_use_orig_params_is_refused_by_name(tmp_path):
    two = _run("fsdp1-flat", "lorma", tmp_path / "two")
    errors = json.loads((two / "errors.json").read_text())
    assert "use_orig_params=True" in errors["save"]
    assert not (two / "adapter").exists()
