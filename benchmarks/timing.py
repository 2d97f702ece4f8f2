"""Timing the benchmarks share: setups run alternately on the same inputs, so that a machine
busy with other work slows every setup alike."""
import time

import torch


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
