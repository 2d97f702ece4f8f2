"""What the benchmarks share: setups timed alternately on the same inputs (a machine busy with
other work slows every setup alike), a GEMM probe of the machine's matmul throughput now, and
one MethodConfig per variant the loralib registry lists."""
import argparse
import time

import torch

import loralib as lora


def interleaved(fns, inputs, device=torch.device("cpu")):
    """Mean seconds per call of each function; inputs[0] is an untimed warm-up for every one."""
    secs = dict.fromkeys(fns, 0.0)
    for fn in fns.values():
        fn(inputs[0])
    for x in inputs[1:]:
        for k, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            secs[k] += time.perf_counter() - t0
    return {k: v / max(1, len(inputs) - 1) for k, v in secs.items()}


def gemm_probe(device=torch.device("cpu"), dtype=torch.float32, n=2048, reps=5, clock=time.perf_counter):
    """FLOP/s of an n x n x n matmul on this device, now: the faster of torch's matmul and, on
    a CPU, oneDNN's (loralib.cpu_linear), so that a fraction of it is a fraction of the best
    this machine does at that size. clock=time.process_time: FLOPs per CPU-second of this
    process, which other jobs on a shared machine move much less than wall-clock rates."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    products = [lambda: a @ b]
    if device.type == "cpu":
        products.append(lambda: lora.cpu_linear.linear(a, b))
    best = 0.0
    with torch.no_grad():
        for product in products:
            for _ in range(2):
                product()
            sync()
            t0 = clock()
            for _ in range(reps):
                product()
            sync()
            best = max(best, 2 * n ** 3 * reps / (clock() - t0))
    return best


def padded_batches(path, batch_size, seq_len, n_batches):
    """The first n_batches batches of an encoded jsonl as the trainer pads them (nlg.data_utils),
    each with its rows' lengths ("length")."""
    from nlg.data_utils import FT_Dataset, collate_pad
    ds = FT_Dataset(str(path), batch_size, seq_len)
    out = []
    for b in range(n_batches):
        items = [ds[i] for i in range(b * batch_size, (b + 1) * batch_size)]
        batch = collate_pad(items)
        batch["length"] = torch.tensor([len(it["input"]) for it in items])
        out.append(batch)
    return out


def peft_step(model, device=torch.device("cpu"), lr=2e-4):
    """One training step of a transformers + peft model on a pipeline batch (nlg.data_utils:
    input, mask, length): labels -100 outside the completion, the model's own loss, torch's
    AdamW with the pipeline's settings."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                            betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)

    def step(b):
        inp, msk = b["input"], b["mask"]
        # the model shifts labels itself: the label at p + 1 is scored from position p
        labels = torch.full_like(inp, -100)
        labels[:, 1:] = torch.where(msk[:, :-1] > 0, inp[:, 1:], torch.tensor(-100))
        attn = torch.arange(inp.shape[1])[None] < b["length"][:, None]
        out = model(input_ids=inp.to(device), attention_mask=attn.long().to(device),
                    labels=labels.to(device))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def variant_configs(pipeline, r, alpha, dropout=None):
    """name -> MethodConfig for every variant the registry lists (qNOLA at 3 bits), built from
    the flags the generated scripts pass, so a benchmark runs what the scripts run."""
    p = argparse.ArgumentParser()
    lora.add_method_args(p)
    out = {}
    for name, (method, flags) in lora.script_variants().items():
        rank = "--lora_dim" if lora.get_spec(method).cli.uses_lora_dim else "--nola_rank"
        argv = f"--method {method} {flags.replace('${QBITS}', '3')} {rank} {r} --lora_alpha {alpha}"
        if dropout is not None:
            argv += f" --lora_dropout {dropout}"
        out[name] = lora.method_config_from_args(p.parse_args(argv.split()), pipeline=pipeline)
    return out
