"""Which multi-GPU setups train_math_lorma.py accepts, checked before anything is loaded.

DeepSpeed ZeRO-3 partitions every parameter into placeholders: a state dict read from the model
holds empty tensors unless DeepSpeed gathers them, and loralib does not drive DeepSpeed's gather,
so a ZeRO-3 run would end with an empty adapter. It is refused at start, naming FSDP, which
loralib does gather (loralib/fsdp.py). ZeRO-1/2 keep whole parameters and are passed through.
FSDP1 needs use_orig_params=True (an adapter and its frozen weight in one flat parameter have
mixed requires_grad); FSDP2 needs nothing.
"""
import json
import os
from typing import Mapping, Optional

ZERO3 = ("DeepSpeed ZeRO-3 is not supported: it partitions the adapter into placeholders that "
         "loralib does not gather, so the saved adapter would be empty. Shard with FSDP instead "
         "(--fsdp full_shard, or accelerate launch --config_file NLG/MetaMathQA/fsdp.yaml; "
         "README: LLM pipeline), or use ZeRO-1/2")


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _zero_stage(config, where: str) -> Optional[int]:
    if config is None or config == "":
        return None
    if isinstance(config, str):
        text = config
        if not text.lstrip().startswith("{"):
            if not os.path.isfile(config):
                raise ValueError(f"{where}: {config}: no such DeepSpeed config file")
            with open(config, encoding="utf-8") as f:
                text = f.read()
        try:
            config = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg}, line {e.lineno})") from None
    stage = (config.get("zero_optimization") or {}).get("stage")
    return None if stage in (None, "auto") else int(stage)


def refuse_zero3(deepspeed=None, environ: Mapping[str, str] = os.environ) -> None:
    """SystemExit if --deepspeed (a JSON file, a JSON string or a dict) or the environment
    `accelerate launch` sets from its config file asks for ZeRO stage 3."""
    if _zero_stage(deepspeed, "--deepspeed") == 3:
        raise SystemExit(f"train_math_lorma.py: --deepspeed asks for ZeRO stage 3. {ZERO3}")
    if not _truthy(environ.get("ACCELERATE_USE_DEEPSPEED", "false")):
        return
    stage = environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    if stage is None:
        stage = _zero_stage(environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"),
                            "ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if stage is not None and int(stage) == 3:
        raise SystemExit(f"train_math_lorma.py: the accelerate config asks for DeepSpeed ZeRO "
                         f"stage 3. {ZERO3}")


def check_trainer_sharding(accelerator_state) -> Optional[str]:
    """'fsdp1' / 'fsdp2' / None for the Trainer's accelerator state; SystemExit for setups
    loralib cannot save from (ZeRO-3 that got past refuse_zero3, FSDP1 without
    use_orig_params)."""
    ds = getattr(accelerator_state, "deepspeed_plugin", None)
    if ds is not None and getattr(ds, "zero_stage", None) == 3:
        raise SystemExit(f"train_math_lorma.py: {ZERO3}")
    fsdp = getattr(accelerator_state, "fsdp_plugin", None)
    if fsdp is None:
        return None
    if getattr(fsdp, "fsdp_version", 1) == 2:
        return "fsdp2"
    if not fsdp.use_orig_params:
        import loralib
        raise SystemExit(f"train_math_lorma.py: {loralib.fsdp.USE_ORIG_PARAMS}")
    return "fsdp1"
