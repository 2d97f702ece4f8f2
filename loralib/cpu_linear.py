"""x W^T + b for inference on a CPU through oneDNN's matmul, else torch's F.linear.

Why: on a CPU, F.linear calls MKL's sgemm, which is slow at the shapes inference runs (a few
hundred rows against a wide weight): on the 2-core dev machine it reached 54% of a 2048^3
matmul's throughput for GPT-2's vocabulary projection at 160 rows, where oneDNN's matmul (the
same library torch's compiler uses for frozen CPU models) reached 113%, and 65% against 93% for
the blocks' projections. The result is the same product up to float rounding (a few 1e-7
relative).

The oneDNN path is taken only where it computes what F.linear would: no gradient being
recorded (it has no backward), float32 or bfloat16 CPU tensors of the same dtype, no CPU
autocast (which would have cast the operands), and a torch built with it. bfloat16 only where
this CPU's oneDNN has a bf16 product (AVX512 or AMX; see bf16_supported): elsewhere, e.g. an
AVX2-only CPU, oneDNN cannot build one ("could not create a primitive descriptor") and
F.linear computes it instead. LORALIB_CPU_LINEAR=torch
in the environment, or set_enabled(False), keeps F.linear everywhere (to reproduce MKL's exact
rounding).

Within `packed_weights(rows)` (decoding opens one), each weight a product meets is reordered once
into oneDNN's blocked layout for products of about `rows` rows, and later products use that copy:
otherwise oneDNN reorders the plain weight on every call. On the dev machine that took the
blocks' products at 70 rows from about 75% to 88-94% of a 2048^3 matmul. The copy costs one more
weight's worth of memory while the block is open; LORALIB_CPU_PREPACK=0 turns it off.
"""
import os
from contextlib import contextmanager

import torch
import torch.nn.functional as F

_DTYPES = (torch.float32, torch.bfloat16)
_enabled = os.environ.get("LORALIB_CPU_LINEAR", "onednn") != "torch"
_op = None
_bf16 = None        # whether oneDNN computes bf16 products on this CPU (bf16_supported)
_prepack = os.environ.get("LORALIB_CPU_PREPACK", "1") != "0"
# the open packed_weights block: {"rows": hint, "cache": key -> (weight, its version, packed)}
_scope = None


def _onednn_op():
    global _op
    if _op is None:
        try:
            _op = torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else False
        except (AttributeError, RuntimeError):
            _op = False
    return _op


def bf16_supported() -> bool:
    """Whether oneDNN computes a bf16 product on this CPU, decided once per process: torch's
    own capability check (oneDNN needs AVX512 or AMX for bf16 on x86), and one tiny product
    that must run and match F.linear, so that a build or CPU the check misjudges falls back to
    F.linear instead of failing in the middle of a model."""
    global _bf16
    if _bf16 is None:
        _bf16 = False
        op = _onednn_op()
        try:
            capable = torch.ops.mkldnn._is_mkldnn_bf16_supported()
        except (AttributeError, RuntimeError):
            capable = True          # no such check in this torch: the product decides
        if op and capable:
            x = torch.arange(16, dtype=torch.bfloat16).reshape(2, 8)
            w = torch.ones(3, 8, dtype=torch.bfloat16)
            try:
                with torch.no_grad():
                    _bf16 = bool(torch.equal(op(x, w, None, "none", [], ""), F.linear(x, w)))
            except RuntimeError:
                pass
    return _bf16


def set_enabled(flag: bool) -> None:
    global _enabled
    _enabled = bool(flag)


def uses_onednn(x: torch.Tensor, w: torch.Tensor) -> bool:
    return (_enabled and not torch.is_grad_enabled() and x.device.type == "cpu" and x.dim() >= 2
            and x.dtype in _DTYPES and w.dtype == x.dtype and not torch.is_autocast_enabled("cpu")
            and bool(_onednn_op()) and (x.dtype != torch.bfloat16 or bf16_supported()))


def _can_pack() -> bool:
    try:
        return bool(_onednn_op()) and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    except (AttributeError, RuntimeError):
        return False


@contextmanager
def packed_weights(rows: int):
    """Within the block, products reuse a copy of their weight in oneDNN's layout (see above).

    rows: the number of rows the products will mostly have (oneDNN picks the layout for it).
    A weight is packed from its second product on. A block opened inside another is part of it
    (the outer hint stands); leaving the outermost frees the copies. A weight changed in place
    within the block (loralib's merge / unmerge, an optimizer step) bumps its version counter and
    is packed again, so a product never uses a stale copy; a write through `.data` bypasses the
    counter, so do not write weights that way inside the block. Inference-mode tensors (no
    version counter) are never packed.
    """
    global _scope
    if _scope is not None or not (_prepack and _can_pack()):
        yield
        return
    _scope = {"rows": max(int(rows), 1), "cache": {}}
    try:
        yield
    finally:
        _scope = None


def _packed(w: torch.Tensor) -> torch.Tensor:
    # Keyed by storage and geometry, not by object: frozen_weight() returns a fresh transposed
    # view each call. The entry holds the weight, so its memory cannot be reused under the key.
    # A weight is packed on its second product, not its first: a run that uses each weight
    # once (one prefill, no step) would pay for the copy and gain nothing (0.5-1 s of GPT-2 S's
    # start-up on the dev machine).
    key = (w.data_ptr(), tuple(w.shape), w.stride(), w.dtype)
    hit = _scope["cache"].get(key)
    if hit is None or hit[1] != w._version:
        _scope["cache"][key] = (w, w._version, None)
        return w
    if hit[2] is None:
        hit = _scope["cache"][key] = (w, w._version,
                                      torch.ops.mkldnn._reorder_linear_weight(w, _scope["rows"]))
    return hit[2]


def linear(x: torch.Tensor, w: torch.Tensor, b=None, gelu_tanh: bool = False) -> torch.Tensor:
    """F.linear(x, w, b), through oneDNN where that is the same computation (see above);
    gelu_tanh: then F.gelu(., approximate="tanh"), fused into the same oneDNN call."""
    if uses_onednn(x, w) and (b is None or b.dtype == x.dtype):
        # (an inference-mode tensor keeps no version counter to tell a stale copy by)
        if _scope is not None and w.dim() == 2 and not w.is_inference():
            w = _packed(w)
        if gelu_tanh:
            return _onednn_op()(x, w, b, "gelu", [], "tanh")
        return _onednn_op()(x, w, b, "none", [], "")
    y = F.linear(x, w, b)
    return F.gelu(y, approximate="tanh") if gelu_tanh else y
