"""Building a model whose every tensor a checkpoint then sets, without initialising it first.

Random initialisation is most of the start-up of a decoding run on a CPU (3 s of GPT-2 S's 4),
and the checkpoint overwrites all of it. Inside `no_init()`, torch.nn.init's functions (what
modules' reset_parameters and loralib's adapter init call) leave their tensor as allocated.
Only for loaders that refuse a file lacking any tensor: what is not loaded would be garbage.
RobertaForSequenceClassification(init_backbone=False) (run_glue with a checkpoint) builds only
the backbone inside it, then draws the adapters and the new classifier head outside it.
"""
import contextlib

import torch

_INIT = ("normal_", "uniform_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
         "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_", "xavier_normal_",
         "trunc_normal_", "orthogonal_", "sparse_")


@contextlib.contextmanager
def no_init():
    saved = {name: getattr(torch.nn.init, name) for name in _INIT if hasattr(torch.nn.init, name)}
    try:
        for name in saved:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)
