"""Checkpoints written by the methods' official GPT-2 code, in this project's naming.

Each official fork of Microsoft's GPT-2 names its adapter tensors its own way. Keys arrive here
in the published naming (training prefixes already stripped) and leave as `checkpoint.py` and
loralib expect them; every other key passes through. The arithmetic is the same on both sides
(README, "Fidelity"), so a converted adapter computes what it computed there.

  LoRMA (NLG/Language-generation/src/model_lorma_{plus,pi}.py): h.N.attn.lora_{A,B}_{q,v}
      -> h.N.attn.c_attn.lora_{A,B}, q rows then v rows (our fused layer's rank blocks)
  MTLoRA (NLG/src/xtuninglib): h.N.attn.c_attn.xtuning_{A,B,C,D}, h.N.mlp.c_fc.xtuning_*
      -> the same modules' lora_{A,B,C,D}
  NOLA (gpt/examples/NLG/src/model_nola.py): h.N.attn.nola_{query,value}.lora_{A,B}.{weight,
      seed,coefficients}, h.N.mlp.p{1,2}_nola.* -> h.N.attn.c_attn / h.N.mlp.c_fc / h.N.mlp.c_proj
      nola_{A0,B0,seed,alpha,beta} plus the nola_config the official file does not record
"""
import re

import torch

_LORMA = re.compile(r"^(h\.\d+\.attn)\.lora_([AB])_([qv])$")
_XTUNING = re.compile(r"^(h\.\d+\.(?:attn\.c_attn|mlp\.c_fc))\.xtuning_([ABCD])$")
_NOLA = re.compile(r"^(h\.\d+)\.(attn\.nola_query|attn\.nola_value|mlp\.p1_nola|mlp\.p2_nola)"
                   r"\.lora_([AB])\.(weight|seed|coefficients)$")
_NOLA_HOME = {"attn.nola_query": ("attn.c_attn", 0), "attn.nola_value": ("attn.c_attn", 1),
              "mlp.p1_nola": ("mlp.c_fc", 0), "mlp.p2_nola": ("mlp.c_proj", 0)}


def translate(sd, source="<state dict>"):
    """`sd` with official adapter keys renamed (and regrouped) into this project's."""
    if not any(_LORMA.match(k) or _XTUNING.match(k) or _NOLA.match(k) for k in sd):
        return sd
    out, lorma, nola = {}, {}, {}
    for key, value in sd.items():
        m = _LORMA.match(key)
        if m:
            lorma.setdefault((m.group(1), m.group(2)), {})[m.group(3)] = value
            continue
        m = _XTUNING.match(key)
        if m:
            out[f"{m.group(1)}.lora_{m.group(2)}"] = value
            continue
        m = _NOLA.match(key)
        if m:
            home, slot = _NOLA_HOME[m.group(2)]
            nola.setdefault(f"{m.group(1)}.{home}", {})[(slot, m.group(3), m.group(4))] = value
            continue
        out[key] = value
    for (module, factor), parts in lorma.items():
        if set(parts) != {"q", "v"}:
            raise ValueError(f"checkpoint {source}: {module}.lora_{factor}_q/_v: only "
                             f"{sorted(parts)} present (LoRMA's GPT-2 code adapts q and v)")
        out[f"{module}.c_attn.lora_{factor}"] = torch.cat([parts["q"], parts["v"]], dim=0)
    for module, parts in nola.items():
        out.update(_nola_module(module, parts, source))
    return out


def _nola_module(module, parts, source):
    slots = sorted({s for s, _, _ in parts})
    need = [(s, f, t) for s in slots for f in "AB" for t in ("weight", "seed", "coefficients")]
    missing = [k for k in need if k not in parts]
    if missing:
        raise ValueError(f"checkpoint {source}: NOLA adapter of {module} lacks "
                         f"{['lora_%s.%s (slot %d)' % (f, t, s) for s, f, t in missing]}")
    A0 = torch.cat([parts[(s, "A", "weight")] for s in slots], dim=0)       # (n*r, in)
    B0 = torch.cat([parts[(s, "B", "weight")] for s in slots], dim=0)       # (n*out, r)
    seeds = torch.stack([torch.cat([parts[(s, "A", "seed")].reshape(1),
                                    parts[(s, "B", "seed")].reshape(1)]) for s in slots])
    alpha = torch.stack([parts[(s, "A", "coefficients")] for s in slots])
    beta = torch.stack([parts[(s, "B", "coefficients")] for s in slots])
    rank = parts[(slots[0], "A", "weight")].shape[0]
    # rank, kA, kB, qbits (none: the official code has no quantizer), offsets ("normal" = 0)
    config = torch.tensor([rank, alpha.shape[1], beta.shape[1], 0, 0], dtype=torch.int64)
    return {f"{module}.nola_A0": A0, f"{module}.nola_B0": B0,
            f"{module}.nola_seed": seeds.to(torch.int64), f"{module}.nola_alpha": alpha,
            f"{module}.nola_beta": beta, f"{module}.nola_config": config}
