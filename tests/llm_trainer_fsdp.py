"""train_math_lorma.py with accelerate made to apply FSDP on CPU processes too.

accelerate shards only GPU processes (its state turns FSDP on for multi-GPU kinds alone), so a
CPU test of the Trainer's FSDP path needs two changes: the state of a multi-CPU run with an
FSDP plugin becomes an FSDP run, and FSDP1 gets device_id "cpu" where accelerate passes "cpu:0"
(the same device, which FSDP1 rejects as inconsistent). Everything else (the Trainer,
accelerate's fully_shard / FSDP1 wrapping, the optimizer, the script's save) is the real code.
Used by tests/test_llm_fsdp.py:

    python -m torch.distributed.run --nproc_per_node=2 llm_trainer_fsdp.py <script flags>
"""
import sys
from pathlib import Path

import accelerate.state
import torch
from accelerate.utils import DistributedType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

_init = accelerate.state.AcceleratorState.__init__


def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin


accelerate.state.AcceleratorState.__init__ = _init_with_fsdp_on_cpu
_fsdp1_init = FSDP.__init__


def _fsdp1_init_on_cpu(self, *args, device_id=None, **kwargs):
    if isinstance(device_id, torch.device) and device_id.type == "cpu":
        device_id = torch.device("cpu")
    _fsdp1_init(self, *args, device_id=device_id, **kwargs)


FSDP.__init__ = _fsdp1_init_on_cpu
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "NLG" / "MetaMathQA"))
import train_math_lorma  # noqa: E402

if __name__ == "__main__":
    train_math_lorma.main(sys.argv[1:])
