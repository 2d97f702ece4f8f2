"""gpt2_ft.py: checkpoints, resume, gradient accumulation, the reference optimizer and schedules."""
import math

import pytest
import torch

from test_train_helpers import (base_args, read_log, run_script, write_backbone, write_card,
                           write_random_data)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    card = write_card(d)
    return {"dir": d, "card": card, "data": write_random_data(d / "train.jsonl", 24),
            "backbone": write_backbone(d / "tiny-pytorch_model.bin", card)}


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


METHOD_FLAGS = {
    "lora": {"--lora_dim": 4, "--lora_alpha": 32, "--lora_dropout": 0.3},
    # quantized NOLA: the resumable state must keep the float latents, not the saved codes
    "qnola": {"--nola_rank": 2, "--nola_c": 1.0, "--nola_num_basis": 16, "--qnola": None,
              "--qbits": 3, "--lora_dropout": 0.3, "--lr": 0.05},
}


@pytest.mark.parametrize("method", sorted(METHOD_FLAGS))
def test_resume_continues_exactly(tiny, tmp_path, method):
    """A run stopped after step 2 and resumed ends bit-identical to an uninterrupted run
    (adapter dropout on, so the RNG state must come back too)."""
    common = dict(**METHOD_FLAGS[method], **{"--save_interval": 3})
    a, b = tmp_path / "a", tmp_path / "b"
    run_script("gpt2_ft.py", base_args(tmp_path, tiny["data"], tiny["card"], tiny["backbone"],
                                       a, **common))
    run_script("gpt2_ft.py", base_args(tmp_path, tiny["data"], tiny["card"], tiny["backbone"],
                                       b, **common, **{"--stop_after_steps": 2}))
    assert not (b / "model.6.pt").exists() and (b / "resume.pt").exists()
    with open(b / "train_log.jsonl", "a") as f:  # a killed run had logged beyond its state
        f.write('{"step": 3, "loss": 0.0}\n')
    run_script("gpt2_ft.py", base_args(tmp_path, tiny["data"], tiny["card"], tiny["backbone"],
                                       b, **common, **{"--resume": None}))
    la, lb = read_log(a), read_log(b)
    assert [r["step"] for r in lb] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    fa, fb = _load(a / "model.6.pt")["model_state_dict"], _load(b / "model.6.pt")["model_state_dict"]
    assert fa.keys() == fb.keys()
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    # the periodic checkpoint is adapter-only, in Microsoft's layout
    periodic = _load(a / "model.3.pt")["model_state_dict"]
    assert periodic and all(("lora_" in k or "nola_" in k) for k in periodic)
    moved = [k for k in periodic if not torch.equal(periodic[k], fa[k])]
    assert moved  # steps 4-6 changed the adapter


def test_gradient_accumulation_equals_larger_batch(tiny, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_script("gpt2_ft.py", base_args(tmp_path, tiny["data"], tiny["card"], tiny["backbone"], a,
                                       **{"--lora_dim": 4, "--train_batch_size": 4,
                                          "--max_step": 4}))
    run_script("gpt2_ft.py", base_args(tmp_path, tiny["data"], tiny["card"], tiny["backbone"], b,
                                       **{"--lora_dim": 4, "--train_batch_size": 2,
                                          "--grad_acc": 2, "--max_step": 4}))
    la, lb = read_log(a), read_log(b)
    assert len(la) == len(lb) == 4
    for ra, rb in zip(la, lb):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["lr"] == rb["lr"]
    fa, fb = _load(a / "model.4.pt")["model_state_dict"], _load(b / "model.4.pt")["model_state_dict"]
    assert max((fa[k] - fb[k]).abs().max().item() for k in fa) < 1e-5


def test_final_checkpoint_is_enough_to_decode(tiny, tmp_path):
    """The final model.<step>.pt loads alone; the adapter-only periodic one needs the backbone."""
    from nlg.checkpoint import load_model_weights
    from nlg.model import GPT2LMModel, config_from_card
    import loralib as lora
    w = tmp_path / "w"
    run_script("gpt2_ft_lorma_plus.py", base_args(
        tmp_path, tiny["data"], tiny["card"], tiny["backbone"], w,
        **{"--lora_dim": 2, "--lora_alpha": 8, "--max_step": 4, "--save_interval": 2,
           "--lr": 0.05}))
    cfg = lora.MethodConfig(method="lorma", r=2, alpha=8, options={"kind": "rri"})
    x = torch.randint(0, 200, (2, 9))

    def logits(**files):
        m = GPT2LMModel(config_from_card(tiny["card"], method=cfg)).eval()
        load_model_weights(m, **files)
        with torch.no_grad():
            return m(x)[0]

    final = logits(init_checkpoint=w / "model.4.pt")
    base = logits(init_checkpoint=tiny["backbone"], random_init=False)
    assert (final - base).abs().max() > 1e-3  # training moved the adapter
    periodic = logits(init_checkpoint=w / "model.2.pt", backbone_checkpoint=tiny["backbone"])
    assert (periodic - base).abs().max() > 0
    with pytest.raises(ValueError, match=r"model\.2\.pt.*missing \d+ of \d+ backbone.*only adapter"):
        logits(init_checkpoint=w / "model.2.pt")
    # a plain model refuses an adapter it cannot hold
    m = GPT2LMModel(config_from_card(tiny["card"]))
    with pytest.raises(ValueError, match="built without an adapter"):
        load_model_weights(m, init_checkpoint=w / "model.4.pt")
    info = __import__("json").loads((w / "run_info.json").read_text())
    assert info["method"] == "lorma" and info["final_checkpoint"].endswith("model.4.pt")
    assert info["trainable_params"] == 2 * 2 * (2 * 32 * 2)  # layers x (q, v) x (B + A: 32x2 each)


def test_full_finetuning_trains_everything(tiny, tmp_path):
    w = tmp_path / "w"
    run_script("gpt2_ft.py", base_args(tmp_path, tiny["data"], tiny["card"], tiny["backbone"], w,
                                       **{"--max_step": 2, "--save_interval": 1, "--warmup_step": 0}))
    periodic = _load(w / "model.1.pt")["model_state_dict"]
    base = _load(tiny["backbone"])
    assert {"transformer." + k for k in base} == set(periodic)
    changed = [k for k in base if not torch.equal(base[k], periodic["transformer." + k])]
    assert len(changed) == len(base)  # every tensor moved (wte included)
    info = __import__("json").loads((w / "run_info.json").read_text())
    assert info["method"] == "full" and info["trainable_params"] == info["total_params"]


def test_random_backbone_needs_the_flag(tiny, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:     # one clean line, exit 2, before any settings dump
        run_script("gpt2_ft.py", base_args(tmp_path, tiny["data"], tiny["card"], None,
                                           tmp_path / "w", **{"--init_checkpoint": False}))
    err = capsys.readouterr()
    assert e.value.code == 2 and "--random_init" in err.err and "=====" not in err.out
    for bad, match in (({"--init_checkpoint": tmp_path / "none.bin"}, "none.bin: no such file"),
                       ({"--model_card": "gpt2.xl"}, "--model_card 'gpt2.xl'"),
                       ({"--seq_len": 4096}, "exceeds n_positions")):
        with pytest.raises(SystemExit) as e:
            run_script("gpt2_ft.py", base_args(tmp_path, tiny["data"], tiny["card"],
                                               tiny["backbone"], tmp_path / "w", **bad))
        err = capsys.readouterr().err
        assert e.value.code == 2 and match in err and len(err.strip().splitlines()) == 1, err
    run_script("gpt2_ft.py", base_args(tmp_path, tiny["data"], tiny["card"], None, tmp_path / "w",
                                       **{"--init_checkpoint": False, "--random_init": None,
                                          "--max_step": 1}))
    assert (tmp_path / "w" / "model.1.pt").exists()


def test_bad_token_ids_name_the_line(tiny, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": [1, 2], "completion": [3, 4]}\n'
                   '{"context": [1, 999], "completion": [3]}\n')
    with pytest.raises(SystemExit, match=r"^gpt2_ft: .*bad\.jsonl:2: token id 999") as e:
        run_script("gpt2_ft.py", base_args(tmp_path, str(bad), tiny["card"], tiny["backbone"],
                                           tmp_path / "w"))
    assert e.value.code == 2        # one line (traincore/cli.py), no traceback


# ---------------------------------------------------------------------------------------------
# optimizer.py against Microsoft's formulas, written out per parameter

def reference_adamw_step(p, g, m, v, t, lr, b1, b2, eps, wd, correct_bias):
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = v.sqrt().add_(eps)
    size = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) if correct_bias else lr
    p.addcdiv_(m, denom, value=-size)
    if wd > 0:
        p.add_(p, alpha=-lr * wd)


@pytest.mark.parametrize("correct_bias", [True, False])
def test_adamw_matches_reference_formula(correct_bias):
    from nlg.optimizer import AdamW
    torch.manual_seed(0)
    ps = [torch.randn(5, 3, dtype=torch.float64, requires_grad=True),
          torch.randn(7, dtype=torch.float64, requires_grad=True)]
    ref = [p.detach().clone() for p in ps]
    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in ref]
    opt = AdamW(ps, lr=0.01, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1,
                correct_bias=correct_bias)
    for t in range(1, 5):
        grads = [torch.randn_like(p) for p in ref]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        opt.step()
        for r, g, (m, v) in zip(ref, grads, state):
            reference_adamw_step(r, g, m, v, t, 0.01, 0.9, 0.98, 1e-6, 0.1, correct_bias)
    for p, r in zip(ps, ref):
        assert torch.allclose(p.detach(), r, rtol=0, atol=1e-12)


def test_schedules_follow_reference_formulas():
    from nlg.optimizer import lr_factor
    W, M = 4, 20
    for k in range(0, 25):
        warm = k / W
        assert lr_factor("linear", k, W, M) == pytest.approx(
            warm if k < W else max(0.0, (M - k) / (M - W)))
        assert lr_factor("constant", k, W, M) == pytest.approx(warm if k < W else 1.0)
        assert lr_factor("cosine", k, W, M) == pytest.approx(
            warm if k < W else 0.5 * (1 + math.cos(math.pi * min(k, M) / M)))
    assert lr_factor("linear", 0, 0, M) == 1.0
    assert lr_factor("cycle", 5, 0, M, base_lr=0.1, i_steps=[0, 10], i_lrs=[0.0, 0.1]) == \
        pytest.approx((5 / (10 + 1e-6)) * 0.1 / 0.1)


def test_lr_used_per_step_in_the_log(tiny, tmp_path):
    w = tmp_path / "w"
    run_script("gpt2_ft.py", base_args(tmp_path, tiny["data"], tiny["card"], tiny["backbone"], w,
                                       **{"--lora_dim": 2, "--max_step": 5, "--warmup_step": 2,
                                          "--lr": 0.1}))
    lrs = [r["lr"] for r in read_log(w)]
    assert lrs == pytest.approx([0.0, 0.05, 0.1, 0.1 * 2 / 3, 0.1 * 1 / 3])


def test_training_steps_do_not_wait_on_the_device(tiny, tmp_path):
    """No host read and no host-to-device copy of a host value per step (the CPU proxy of
    CUDA's sync debug mode, tests/host_reads.py): a run of 6 steps reads exactly what a run of
    2 steps reads (the logging, evaluation and saving at the last step), with accumulation on."""
    from host_reads import count_host_reads
    got = []
    for steps in (2, 6):
        with count_host_reads() as counts:
            run_script("gpt2_ft.py", base_args(
                tmp_path, tiny["data"], tiny["card"], tiny["backbone"], tmp_path / f"w{steps}",
                **{"--lora_dim": 4, "--lora_dropout": 0.1, "--max_step": steps, "--grad_acc": 2,
                   "--clip": 1.0, "--log_interval": 1000}))
        got.append(counts)
    assert got[0] == got[1], (got[0], got[1])


def test_tf32_is_applied_and_kept_by_resume(tiny, tmp_path):
    """--tf32 sets TF32 products for the run (fp32 sets full float32 again); a resumed run must
    keep the setting, as any setting that changes what the steps compute."""
    w = tmp_path / "w"
    args = base_args(tmp_path, tiny["data"], tiny["card"], tiny["backbone"], w,
                     **{"--lora_dim": 2, "--max_step": 4})
    try:
        run_script("gpt2_ft.py", args + ["--tf32", "--stop_after_steps", "2"])
        assert torch.get_float32_matmul_precision() == "high"
        with pytest.raises(SystemExit, match=r"other settings.*tf32: True -> None"):
            run_script("gpt2_ft.py", args + ["--resume"])
        assert torch.get_float32_matmul_precision() == "highest"     # fp32 for the new run
        run_script("gpt2_ft.py", args + ["--tf32", "--resume"])
        assert read_log(w)[-1]["step"] == 4
    finally:
        torch.set_float32_matmul_precision("highest")
