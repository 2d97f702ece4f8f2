"""--compile: a model (or a step function) run through torch.compile, the same way everywhere.

dynamic=True: batches are padded to their own longest example and the beam search's batch
shrinks as examples finish, so lengths change from step to step; symbolic shapes compile once
for all of them instead of once per length (torch would recompile for the second length seen
and then switch to symbolic shapes anyway, after one compilation more). Off by default: the
first steps pay the compilation (seconds on a GPU, a minute on a small CPU), which a short run
never earns back.
"""
import torch


def compiled(fn, backend: str = "inductor"):
    """torch.compile(fn, dynamic=True, backend=backend); fn is a module or a function.

    backend: "inductor" (generated kernels: the speed), or one torch.compile lists, e.g.
    "aot_eager" (the same graphs run by eager kernels: no code generation, for checking that a
    model compiles without paying for it)."""
    return torch.compile(fn, dynamic=True, backend=backend)
