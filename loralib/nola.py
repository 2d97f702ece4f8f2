"""NOLA: LoRA factors as linear combinations of fixed random bases (Koohpayegani et al., ICLR 2024).

As the official code (UCDvision/NOLA, gpt/examples/NLG/src/model_nola.py) computes it, per
adapted projection:

    A = A0 + sum_i alpha_i UA_i / sqrt(kA)     (r, in)       UA: uniform(-1, 1), seed sA
    B = B0 + sum_j beta_j  UB_j / sqrt(kB)     (out, r)      UB: uniform(-1, 1), seed sB
    Delta W = s B A,  s = nola_c / rank   (the official scripts' --lora_alpha / --lora_rank)

Only alpha and beta train (kA + kB numbers per projection); they start at 0. A0 and B0 are
frozen offsets (`offsets`): "normal" is the official GPT-2 code, whose `_init_weights` re-draws
both from N(0, 0.02) (the layers holding them are nn.Linear), so Delta W is small but not zero
at init; "kaiming" is the official LLaMA code (A0 kaiming-uniform, B0 = 0: identity at init);
"none" is the project's variant without offsets (alpha = 1/kA, beta = 0 at init: identity).
The offsets come from a per-module offset seed, not from the global RNG as in the official code
(the same distributions): an adapter file keeps the seed and leaves them out (nola_offsets.py),
so it holds what cannot be regenerated: the coefficients (b-bit codes for quantized NOLA), the
seeds and the settings.

Bases: each factor of each projection has its own seed, an int64 in [0, 1e10) drawn from torch's
global generator when the layer is built (as the official `torch.randint(int(1e10), (1,))`; with
`seed=<int>` from a generator seeded by it instead), kept in the `nola_seed` buffer and so saved
with the adapter. A basis is uniform(-1, 1) over (k, rows, cols) from a generator seeded by the
seed, times 1/sqrt(k), as the official GenerateParams. The official code draws it on the
coefficients' device, whose stream differs between a CPU and a GPU and between GPU models; by
default (basis_device="cpu") it is drawn on the CPU, which gives the official numbers on a CPU
and the same numbers on every machine, and cached on the coefficients' device. basis_device=
"native" is the official behaviour. Either way the layer records its bases' origin in
`nola_config` and refuses to compute on a device that would draw other numbers (nola_bases.py).

Quantized NOLA (`qbits`) is this project's implementation of the paper's description, not the
released code's: the official GPT-2 code parses --qnola / --qbits and never uses them. alpha and
beta go through straight-through fake quantization in the forward; `lora_state_dict` saves them
as packed b-bit codes plus one scale per vector.
"""
import warnings
from typing import Optional

import torch
import torch.nn as nn

from . import nola_bases, nola_offsets, quant
from .base import LowRankAdapter
from .methods.nola import BASIS_DEVICES, OFFSETS

QCODES, QSCALE = "_qcodes", "_qscale"
CONFIG_FIELDS = ("rank", "num_basis_A", "num_basis_B", "qbits", "offsets")
# where the bases were drawn (nola_bases.stream_of); files written before these fields existed
# hold CONFIG_FIELDS alone and were drawn on the training device (the official behaviour)
ORIGIN_FIELDS = ("basis_origin", "basis_sm", "basis_sm_threads")
SEED_RANGE = int(1e10)
LEGACY_WARNING = ("NOLA adapter written before loralib recorded where its bases are drawn "
                  "(e.g. an official checkpoint): they are drawn on the device of the first "
                  "forward or merge, which is recorded but cannot be checked against the "
                  "training device; decode on the kind of device (and GPU model) it trained on")


class NOLALinear(LowRankAdapter):
    def __init__(self, in_features: int, out_features: int, r: int = 0, lora_alpha: float = 1,
                 lora_dropout: float = 0.0, enable_lora=None, fan_in_fan_out: bool = False,
                 merge_weights: bool = False, num_basis_A: int = 1024, num_basis_B: int = 1024,
                 qbits: Optional[int] = None, seed: Optional[int] = None,
                 offsets: str = "kaiming", offset_std: float = 0.02, basis_device: str = "cpu",
                 **kwargs):
        for name, k in (("num_basis_A", num_basis_A), ("num_basis_B", num_basis_B)):
            if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
                raise ValueError(f"NOLA {name} must be a positive integer, got {k!r}")
        if qbits is not None:
            quant.levels(qbits)
        if offsets not in OFFSETS:
            raise ValueError(f"unknown NOLA offsets {offsets!r} (choose from {OFFSETS})")
        if basis_device not in BASIS_DEVICES:
            raise ValueError(f"unknown NOLA basis_device {basis_device!r} (choose from "
                             f"{BASIS_DEVICES})")
        self.basis_device = basis_device
        # Python mirror of the origin fields (read in forward without a device sync)
        self._origin = nola_bases.CPU if basis_device == "cpu" else nola_bases.UNRECORDED
        self.num_basis_A, self.num_basis_B = num_basis_A, num_basis_B
        self.qbits, self.seed, self.offsets = qbits, seed, offsets
        self.offset_std = float(offset_std)
        super().__init__(in_features, out_features, r=r, lora_alpha=lora_alpha,
                         lora_dropout=lora_dropout, enable_lora=enable_lora,
                         fan_in_fan_out=fan_in_fan_out, merge_weights=merge_weights, **kwargs)

    def config_values(self):
        return [self.r, self.num_basis_A, self.num_basis_B, self.qbits or 0,
                OFFSETS.index(self.offsets)]

    def build_adapter(self) -> None:
        n, r, d, k = self.n_enabled, self.r, self.slice_size, self.in_features
        self.nola_alpha = nn.Parameter(self.weight.new_zeros((n, self.num_basis_A)))
        self.nola_beta = nn.Parameter(self.weight.new_zeros((n, self.num_basis_B)))
        gen = None if self.seed is None else torch.Generator().manual_seed(int(self.seed))
        seeds = torch.cat([torch.randint(SEED_RANGE, (1,), generator=gen, device="cpu")
                           for _ in range(2 * n)])
        self._seeds = [tuple(p) for p in seeds.view(n, 2).tolist()]
        # On the meta device (a layer loralib.inject is about to fill) the seeds stay on the
        # CPU: they are values, not storage to allocate later.
        dev = self.weight.device
        self.register_buffer("nola_seed", seeds.view(n, 2).to("cpu" if dev.type == "meta" else dev))
        self.register_buffer("nola_config", torch.tensor(self.config_values() + list(self._origin),
                                                         dtype=torch.int64))
        if self.offsets != "none":
            self.register_buffer("nola_A0", self.weight.new_zeros((n * r, k)))
            self.register_buffer("nola_B0", self.weight.new_zeros((n * d, r)))
            # the offsets' seed comes from the global RNG whatever `seed` says, as the offsets
            # themselves did (each module its own, also with --nola_seed)
            std = self.offset_std if self.offsets == "normal" else 0.0
            init = torch.tensor([int(torch.randint(SEED_RANGE, (1,), device="cpu")),
                                 nola_offsets.std_bits(std)], dtype=torch.int64, device="cpu")
            self.register_buffer("nola_offset_init", init.to("cpu" if dev.type == "meta" else dev))

    @torch.no_grad()
    def reset_adapter_parameters(self) -> None:
        nn.init.zeros_(self.nola_beta)
        if self.offsets == "none":
            nn.init.constant_(self.nola_alpha, 1.0 / self.num_basis_A)
            return
        nn.init.zeros_(self.nola_alpha)
        init = self.nola_offset_init
        if not init.is_meta and int(init[0]) == nola_offsets.FROM_FILE:   # a re-init
            self._new_offset_seed(nola_offsets.bits_std(int(self.nola_offset_init[1])))
        self._draw_offsets()

    @torch.no_grad()
    def init_like_backbone(self, std: float) -> None:
        # The official `_init_weights` re-draws the offsets of every layer from the global RNG
        # after the deep copy of one block: each layer draws its own offset seed here.
        if self.has_adapter and self.offsets == "normal":
            self._new_offset_seed(std)
            self._draw_offsets()

    def _new_offset_seed(self, std: float) -> None:
        self.nola_offset_init.copy_(torch.tensor(
            [int(torch.randint(SEED_RANGE, (1,), device="cpu")), nola_offsets.std_bits(std)],
            device="cpu"))

    def _offset_init(self, init: torch.Tensor):
        seed, bits = (int(v) for v in init.tolist())
        return seed, nola_offsets.bits_std(bits)

    def _draw_offsets(self) -> None:
        if self.nola_A0.is_meta:        # loralib.inject allocates and resets it later
            return
        seed, std = self._offset_init(self.nola_offset_init)
        A0, B0 = self.nola_A0, self.nola_B0
        if A0.device.type == "cpu" and A0.dtype == torch.float32:
            nola_offsets.draw(self.offsets, seed, std, A0, B0)
        else:
            a, b = nola_offsets.drawn(self.offsets, seed, std, A0.shape, B0.shape)
            A0.copy_(a)
            B0.copy_(b)

    def _offsets_regenerate(self, state) -> bool:
        """Whether the state's A0, B0 are exactly what its offset seed gives (so a file may
        leave them out)."""
        init, A0, B0 = (state.get(n) for n in ("nola_offset_init", "nola_A0", "nola_B0"))
        if init is None or A0 is None or B0 is None or A0.is_meta or init.is_meta:
            return False
        seed, std = self._offset_init(init)
        if seed == nola_offsets.FROM_FILE:
            return False
        a, b = nola_offsets.drawn(self.offsets, seed, std, A0.shape, B0.shape)
        return torch.equal(a.to(A0.dtype), A0.cpu()) and torch.equal(b.to(B0.dtype), B0.cpu())

    def _complete_offsets(self, state, prefix: str = "", where: str = "") -> None:
        """A file without A0, B0 gets them from its offset seed; one with them but without a
        seed (official, older) gets FROM_FILE."""
        if self.offsets == "none":
            return
        a0, b0, init = (prefix + n for n in ("nola_A0", "nola_B0", "nola_offset_init"))
        if a0 in state or b0 in state:
            if init not in state:
                state[init] = torch.tensor([nola_offsets.FROM_FILE, 0], dtype=torch.int64,
                                           device="cpu")
        elif init in state:
            seed, std = self._offset_init(state[init])
            if seed == nola_offsets.FROM_FILE:
                raise KeyError(f"missing key(s) {where + a0!r}, {where + b0!r}: these offsets "
                               f"came from a file (nola_offset_init has no seed) and cannot "
                               f"be regenerated")
            state[a0], state[b0] = nola_offsets.drawn(self.offsets, seed, std,
                                                      self.nola_A0.shape, self.nola_B0.shape)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", nola kA={self.num_basis_A} kB={self.num_basis_B}"
                                       f" qbits={self.qbits} offsets={self.offsets}"
                                       f" bases={nola_bases.describe(self._origin)}")

    def coefficients(self):
        a, b = self.nola_alpha, self.nola_beta
        if self.qbits is not None:
            a, b = quant.fake_quantize(a, self.qbits), quant.fake_quantize(b, self.qbits)
        return a, b

    def _native(self, device: torch.device) -> bool:
        """Whether the bases are drawn on `device` (else on the CPU). A native adapter records
        the stream of its first use and stops where another device would draw other numbers."""
        if self._origin == nola_bases.CPU:
            return False
        if device.type == "meta":
            return True
        here = nola_bases.stream_of(device)
        if self._origin == nola_bases.UNRECORDED:
            self._origin = here
        elif here != self._origin:
            raise RuntimeError(
                f"NOLA: this adapter's bases were drawn on {nola_bases.describe(self._origin)}, "
                f"but it now runs on {device}, {nola_bases.describe(here)}, whose generator "
                f"draws other numbers from the same seeds (the result would be noise): run it "
                f"on the kind of device it trained on, or train with basis_device='cpu' "
                f"(--nola_basis_device cpu), which reproduces on every device")
        return True

    def factors(self, w):
        a, b = self.coefficients()
        n, r, k, d = self.n_enabled, self.r, self.in_features, self.slice_size
        native = self._native(a.device)
        A = nola_bases.combine(a, [sa for sa, _ in self._seeds], r, k, native)
        B = nola_bases.combine(b, [sb for _, sb in self._seeds], d, r, native)
        A, B = A.view(n * r, k).to(a.dtype), B.to(b.dtype)
        if self.offsets != "none":
            A = A + self.nola_A0
            B = B + self.nola_B0.view(n, d, r)
        return A, B

    _COEFS = ("nola_alpha", "nola_beta")

    def pack_adapter_state(self, state):
        state = dict(state)
        if self._offsets_regenerate(state):      # what the offset seed gives: left out
            del state["nola_A0"], state["nola_B0"]
        if self.qbits is None:
            return state
        for coef in self._COEFS:
            if coef in state:
                codes, scale = quant.quantize(state.pop(coef), self.qbits)
                state[coef + QCODES] = quant.pack_codes(codes, self.qbits)
                state[coef + QSCALE] = scale
        return state

    def unpack_adapter_state(self, state, where: str = ""):
        state = dict(state)
        if "nola_config" in state:
            key = f"{where}.nola_config" if where else "nola_config"
            state["nola_config"] = self._incoming_config(state["nola_config"], key)
        self._complete_offsets(state, where=f"{where}." if where else "")
        for key in [k for k in state if k.endswith(QCODES)]:
            coef = key[: -len(QCODES)]
            full = f"{where}.{key}" if where else key
            if self.qbits is None or coef not in self._COEFS:
                raise KeyError(f"unexpected key {full!r}: {where or 'the layer'} is not a "
                               f"quantized NOLA layer")
            if coef + QSCALE not in state:
                raise KeyError(f"missing key {full[:-len(QCODES)] + QSCALE!r} (the scales of "
                               f"{full!r})")
            scale = state.pop(coef + QSCALE)
            codes = quant.unpack_codes(state.pop(key), self.qbits, getattr(self, coef).shape)
            state[coef] = quant.stable_dequantize(codes, scale.to(torch.float32), self.qbits)
        return state

    def _incoming_config(self, value: torch.Tensor, key: str) -> torch.Tensor:
        """A file's nola_config checked against this layer, in this version's layout."""
        got = [int(v) for v in value.tolist()]
        mine, n = self.config_values(), len(CONFIG_FIELDS)
        if len(got) == n:
            if self.basis_device != "native":
                raise ValueError(
                    f"{key}: written before loralib recorded where NOLA's bases are drawn (an "
                    f"official checkpoint, or an older loralib file): they were drawn on the "
                    f"training device, as the official code does; load it into a model built "
                    f"with basis_device='native' (--nola_basis_device native) and decode it on "
                    f"the kind of device it was trained on")
            warnings.warn(LEGACY_WARNING)
            origin = nola_bases.UNRECORDED
        elif len(got) == n + len(ORIGIN_FIELDS):
            origin = tuple(got[n:])
            if not 0 <= origin[0] < len(nola_bases.ORIGINS):
                raise ValueError(f"{key}: unknown basis origin code {origin[0]} (known: "
                                 f"{list(enumerate(nola_bases.ORIGINS))})")
            if origin == nola_bases.UNRECORDED and self.basis_device == "cpu":
                origin = nola_bases.CPU     # never drawn yet: this layer's own choice holds
        else:
            raise ValueError(f"{key}: written by another loralib version ({got}); this "
                             f"version records {CONFIG_FIELDS + ORIGIN_FIELDS}: retrain or "
                             f"convert it")
        if got[:n] != mine:
            diff = ", ".join(f"{f} {g} (model has {m})"
                             for f, g, m in zip(CONFIG_FIELDS, got, mine) if g != m)
            raise ValueError(f"{key}: the adapter was trained with {diff}; "
                             f"build the model with the same NOLA settings")
        return torch.tensor(mine + list(origin), dtype=torch.int64)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if hasattr(self, "nola_config") and not self.nola_config.is_meta:
            with torch.no_grad():       # the origin may have been recorded by a forward
                self.nola_config[len(CONFIG_FIELDS):] = torch.tensor(
                    self._origin, dtype=torch.int64, device=self.nola_config.device)
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "nola_config"
        if key in state_dict and hasattr(self, "nola_config"):
            state_dict[key] = self._incoming_config(state_dict[key], key)
        if hasattr(self, "nola_config"):
            self._complete_offsets(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if hasattr(self, "nola_seed") and not self.nola_seed.is_meta:
            self._seeds = [tuple(p) for p in self.nola_seed.tolist()]
        if hasattr(self, "nola_config") and not self.nola_config.is_meta:
            self._origin = tuple(int(v) for v in self.nola_config[len(CONFIG_FIELDS):].tolist())
