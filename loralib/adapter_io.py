"""Self-describing adapter folders: `save_adapter(model, dir)` / `load_adapter(model, dir)`.

A folder holds `adapter_config.json` (method, options, rank, alpha, dropout, targets, base model,
loralib version, under the key "loralib") and the adapter tensors, `adapter_model.safetensors`
when the safetensors package is installed, else `adapter_model.bin` (loralib itself needs torch
alone). LoRA on unfused projections is written in PEFT's layout (`base_model.model.<module>.
lora_A.weight`, PEFT's LoraConfig keys), so `peft.PeftModel.from_pretrained` loads it; a folder
PEFT saved (plain LoRA) loads here as well, and so does a folder of NOLA's LLaMA code (its PEFT
0.4 fork: LoraConfig with "use_nola", tensors lora_A / lora_B .weight, .seed, .coefficients; see
`_official_nola`). Under FSDP every rank calls `save_adapter` (the adapter is gathered
collectively) and rank 0 writes; `load_adapter` goes on the unsharded model.
"""
import json
import os
import re
import tempfile
from typing import Dict, Optional

import torch
import torch.nn as nn

from .base import AdaptedLinear
from .fsdp import class_name, clean_name, is_writer
from .methods.nola import OFFSETS
from .registry import MethodConfig
from .utils import load_lora_state_dict, lora_state_dict

CONFIG_NAME = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."
# LoraConfig settings that change what PEFT computes and that plain LoRA here does not have
_PEFT_UNSUPPORTED = {"use_rslora": False, "use_dora": False, "rank_pattern": {},
                     "alpha_pattern": {}, "lora_bias": False, "bias": "none"}


def _version() -> str:
    from . import __version__
    return __version__


def _adapted(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AdaptedLinear)
            and m.has_adapter]


def _peft_compatible(model: nn.Module, config: MethodConfig) -> bool:
    layers = _adapted(model)
    # a layer on a k-bit base is the method's class behind KbitLayer (kbit.py): PEFT's LoRA
    # on a bitsandbytes layer reads the same keys
    return config.method == "lora" and bool(layers) and all(
        len(m.enable_lora) == 1 and (getattr(m, "method_class", None) or type(m)).__name__
        in ("MergedLinear", "Linear") and class_name(m).endswith(("MergedLinear", "Linear"))
        for _, m in layers)


def _atomic_write(path: str, write) -> None:
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _save_tensors(tensors: Dict[str, torch.Tensor], folder: str) -> str:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    try:
        from safetensors.torch import save
    except ImportError:
        path = os.path.join(folder, WEIGHTS[1])
        _atomic_write(path, lambda f: torch.save(tensors, f))
        return path
    path = os.path.join(folder, WEIGHTS[0])
    _atomic_write(path, lambda f: f.write(save(tensors)))
    return path


def save_adapter(model: nn.Module, folder: str, config: Optional[MethodConfig] = None,
                 base_model: Optional[str] = None,
                 state_dict: Optional[Dict[str, torch.Tensor]] = None,
                 write: Optional[bool] = None) -> str:
    """Write the adapter of `model` (made by `inject`, or pass its `config`) into `folder`.

    Under torch.distributed every rank may call it and only rank 0 writes (`write` overrides
    that); under FSDP every rank must call it, since gathering the adapter is a collective.
    state_dict: a whole state dict of `model` to take the adapter tensors from (what a Trainer
    gathered), instead of reading the model.
    """
    info = getattr(model, "loralib_adapter", None)
    if config is None:
        if info is None:
            raise ValueError("save_adapter: the model carries no loralib adapter config "
                             "(loralib.inject it, or pass config=)")
        config = info["config"]
    if not _adapted(model):
        raise ValueError("save_adapter: the model has no adapted layer")
    state = lora_state_dict(model, state_dict=state_dict)      # every rank: may be collective
    if not (is_writer() if write is None else write):
        return folder
    os.makedirs(folder, exist_ok=True)
    if base_model is None:
        base_model = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    modules = info["modules"] if info else [clean_name(n) for n, _ in _adapted(model)]
    meta = {"method": config.method, "options": config.options, "r": config.r,
            "alpha": config.alpha, "dropout": config.dropout, "targets": list(config.targets),
            "pipeline": config.pipeline, "target_modules": info["target_modules"] if info else None,
            "enable": info["enable"] if info else None, "modules": modules,
            "base_model": {"name_or_path": base_model, "class": class_name(model)},
            "loralib_version": _version()}
    if _peft_compatible(model, config):
        layers = _adapted(model)
        targets = sorted({clean_name(n).rsplit(".", 1)[-1] for n, _ in layers})
        out = {f"{PEFT_PREFIX}{k}.weight": v for k, v in state.items()}
        cfg = {"peft_type": "LORA", "task_type": None, "r": config.r,
               "lora_alpha": config.alpha, "lora_dropout": config.dropout,
               "target_modules": targets,
               "fan_in_fan_out": any(m.fan_in_fan_out for _, m in layers),
               "bias": "none", "inference_mode": True, "init_lora_weights": True,
               "modules_to_save": None, "base_model_name_or_path": base_model,
               "loralib": {**meta, "format": "peft"}}
    else:
        out = state
        cfg = {"peft_type": None, "loralib": {**meta, "format": "loralib"}}
    _save_tensors(out, folder)
    text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    _atomic_write(os.path.join(folder, CONFIG_NAME), lambda f: f.write(text.encode()))
    return folder


def read_adapter_config(folder: str) -> Dict:
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file (an adapter folder holds "
                                f"{CONFIG_NAME} and {WEIGHTS[0]} or {WEIGHTS[1]})")
    with open(path, encoding="utf-8") as f:
        try:
            cfg = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return cfg


def _config_from(cfg: Dict, path: str):
    """(MethodConfig, target_modules, enable, format) from an adapter_config.json."""
    meta = cfg.get("loralib")
    if meta is not None:
        try:
            config = MethodConfig(method=meta["method"], r=meta["r"], alpha=meta["alpha"],
                                  dropout=meta["dropout"], options=meta["options"],
                                  targets=tuple(meta["targets"]), pipeline=meta.get("pipeline"))
        except KeyError as e:
            raise ValueError(f"{path}: key 'loralib' lacks {e}") from None
        return config, meta.get("target_modules") or meta.get("modules"), meta.get("enable"), \
            meta.get("format", "loralib")
    if cfg.get("peft_type") != "LORA":
        raise ValueError(f"{path}: peft_type {cfg.get('peft_type')!r}: loralib reads PEFT's "
                         f"LORA adapters and its own")
    for key, plain in _PEFT_UNSUPPORTED.items():
        if cfg.get(key, plain) not in (plain, None):
            raise ValueError(f"{path}: {key}={cfg[key]!r} is not plain LoRA; loralib loads "
                             f"PEFT LoRA with {key}={plain!r}")
    if cfg.get("modules_to_save"):
        raise ValueError(f"{path}: modules_to_save={cfg['modules_to_save']!r} is not supported")
    if cfg.get("use_nola"):
        # NOLA's LLaMA code (llama/peft/tuners/lora.py 808-834, 882-890): one number of bases
        # for A and B, offsets A0 kaiming-uniform and B0 = 0, bases drawn on the training device
        k = int(cfg.get("nola_num_basis") or 128)
        config = MethodConfig(method="nola", r=int(cfg["r"]), alpha=float(cfg["lora_alpha"]),
                              dropout=float(cfg.get("lora_dropout") or 0.0),
                              options={"num_basis_A": k, "num_basis_B": k, "offsets": "kaiming",
                                       "basis_device": "native"})
        return config, cfg["target_modules"], None, "nola-peft"
    config = MethodConfig(method="lora", r=int(cfg["r"]), alpha=float(cfg["lora_alpha"]),
                          dropout=float(cfg.get("lora_dropout") or 0.0))
    return config, cfg["target_modules"], None, "peft"


def _load_tensors(folder: str) -> Dict[str, torch.Tensor]:
    st, pt = (os.path.join(folder, w) for w in WEIGHTS)
    if os.path.isfile(st):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(f"{st}: reading it needs the safetensors package") from None
        return load_file(st)
    if os.path.isfile(pt):
        return torch.load(pt, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder}: neither {WEIGHTS[0]} nor {WEIGHTS[1]}")


_NOLA_KEY = re.compile(r"(.+)\.lora_([AB])\.(weight|seed|coefficients)")


def _official_nola(tensors: Dict[str, torch.Tensor], folder: str,
                   config: MethodConfig) -> Dict[str, torch.Tensor]:
    """The tensors of an official NOLA LLaMA adapter in loralib's NOLA names. Per module (PEFT
    0.4's keys, `base_model.model.<module>.lora_A.weight` etc.): lora_A.weight = A0 (r, in) ->
    nola_A0, lora_B.weight = B0 (out, r) -> nola_B0, lora_A/B.coefficients (k,) -> nola_alpha /
    nola_beta (1, k), lora_A/B.seed (1,) -> nola_seed (1, 2); nola_config is the settings in
    the layout of files that do not record where their bases were drawn (they were drawn on the
    training device: the model must use basis_device 'native', as load_adapter builds it)."""
    parts: Dict[str, Dict] = {}
    for key, v in tensors.items():
        m = _NOLA_KEY.fullmatch(key[len(PEFT_PREFIX):].replace(".default", "")) \
            if key.startswith(PEFT_PREFIX) else None
        if m is None:
            raise KeyError(f"{folder}: tensor {key!r} is not a NOLA LLaMA key "
                           f"(base_model.model.<module>.lora_A|lora_B.weight|seed|coefficients)")
        parts.setdefault(m.group(1), {})[m.group(2) + m.group(3)] = v
    out = {}
    for module, p in parts.items():
        lacking = [f"{module}.lora_{n[0]}.{n[1:]}" for n in
                   ("Aweight", "Bweight", "Aseed", "Bseed", "Acoefficients", "Bcoefficients")
                   if n not in p]
        if lacking:
            raise KeyError(f"{folder}: missing tensor(s) {lacking}")
        out[f"{module}.nola_A0"], out[f"{module}.nola_B0"] = p["Aweight"], p["Bweight"]
        out[f"{module}.nola_alpha"] = p["Acoefficients"].reshape(1, -1)
        out[f"{module}.nola_beta"] = p["Bcoefficients"].reshape(1, -1)
        out[f"{module}.nola_seed"] = torch.cat([p["Aseed"].reshape(1), p["Bseed"].reshape(1)]
                                               ).to(torch.int64).view(1, 2)
        out[f"{module}.nola_config"] = torch.tensor(
            [config.r, p["Acoefficients"].numel(), p["Bcoefficients"].numel(), 0,
             OFFSETS.index("kaiming")], dtype=torch.int64)
    return out


def load_adapter(model: nn.Module, folder: str) -> MethodConfig:
    """Load the adapter in `folder` into `model`, injecting it first unless the model already
    has adapted layers; strict (every adapter tensor of the model, nothing else)."""
    # through the package (its __getattr__): importing the submodule `inject` by name first
    # would leave `loralib.inject` bound to the module instead of the function
    from . import inject
    path = os.path.join(folder, CONFIG_NAME)
    config, target_modules, enable, fmt = _config_from(read_adapter_config(folder), path)
    if not _adapted(model):
        inject(model, config, target_modules, enable=enable)
    tensors = _load_tensors(folder)
    if fmt == "peft":
        renamed = {}
        for k, v in tensors.items():
            if not (k.startswith(PEFT_PREFIX) and k.endswith(".weight")):
                raise KeyError(f"{folder}: tensor {k!r} is not a PEFT LoRA key "
                               f"(base_model.model.<module>.lora_A|lora_B.weight)")
            renamed[k[len(PEFT_PREFIX):-len(".weight")].replace(".default", "")] = v
        tensors = renamed
    elif fmt == "nola-peft":
        tensors = _official_nola(tensors, folder, config)
    load_lora_state_dict(model, tensors, source=folder)
    return config

