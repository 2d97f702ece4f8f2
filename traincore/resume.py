"""The resumable state (resume.pt): what a killed run needs to continue bit for bit.

It holds the trained tensors (the frozen backbone comes again from the pretrained file), the
optimizer, scheduler and loss scaler, the RNG state of every process, the step and the data
position (`extra`), and the settings that decide what the steps compute: a resume with other
settings would be neither the old run nor a new one, so it is refused unless the setting is
named in --resume_allow_changes.

Only the main process (rank 0) writes it and only rank 0 reads it: on several machines without
a shared work dir, the others get rank 0's state through the process group (read_resume), so
no process can start afresh while another continues.
"""
import os
from typing import Dict, Iterable, List, Optional

import torch

from .files import save_finite
from .processes import broadcast_object, broadcast_state, gather_objects, is_main_process
from .rng import rng_state, set_rng_state


def changed_settings(saved: Dict, now: Dict, allowed: Iterable[str] = ()) -> List[str]:
    """'name: old -> new' for every setting that differs, except those in `allowed`."""
    allowed = set(allowed)
    out = []
    for k in sorted(set(saved) | set(now)):
        if k in allowed:
            continue
        a, b = saved.get(k), now.get(k)
        if a != b:
            out.append(f"{k}: {a!r} -> {b!r}")
    return out


def allowed_changes(flag_value: str, known: Iterable[str]) -> List[str]:
    """The names given to --resume_allow_changes; an unknown one is an error listing the known."""
    allowed = [a.strip() for a in (flag_value or "").split(",") if a.strip()]
    known = list(known)
    unknown = [a for a in allowed if a not in known]
    if unknown:
        raise SystemExit(f"--resume_allow_changes: unknown setting(s) {unknown} (choose from "
                         f"{', '.join(known)})")
    return allowed


def save_resume(path: str, model: torch.nn.Module, trained: Iterable[str], optimizer, scheduler,
                scaler, step: int, settings: Dict, device, main: bool = True,
                extra: Optional[Dict] = None, hint: str = "") -> None:
    """Write the resumable state (every process calls it: the RNG states are gathered)."""
    rngs = gather_objects(rng_state(device))
    if not main:
        return
    keep = set(trained)
    tensors = {k: v for k, v in model.state_dict().items() if k in keep}
    save_finite({"model_state_dict": tensors, "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict() if scaler is not None else None,
                 "rng": rngs, "step": step, "settings": settings, **(extra or {})}, path,
                tensors=tensors, step=step, hint=hint)


def read_resume(path: str, missing_ok: bool = False) -> Optional[Dict]:
    """The resumable state at `path` as the main process (rank 0) reads it, on every process.

    Rank 0 decides: the other processes need not see the file (a work dir that is not shared
    between machines) and never read their own copy, so all of them continue from the same
    step with the same optimizer state, or all stop with rank 0's error. None when the file is
    missing and missing_ok (then every process starts afresh)."""
    verdict = state = None
    if is_main_process():
        verdict, state = _read(path, missing_ok)
    verdict = broadcast_object(verdict)
    if verdict == "missing":
        return None
    if verdict != "ok":
        raise SystemExit(verdict)
    return broadcast_state(state)


def _read(path: str, missing_ok: bool):
    """("ok", state), ("missing", None) or (the error message, None)."""
    if not os.path.isfile(path):
        if missing_ok:
            return "missing", None
        return f"--resume: {path} not found (it is written every few steps; with several " \
               f"machines it is read on the main process, rank 0)", None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        return f"--resume: {path} is not a readable resumable state (torch.load with " \
               f"weights_only=True failed: {type(e).__name__})", None
    if not isinstance(state, dict) or "optimizer" not in state or "step" not in state:
        return f"--resume: {path} is not a resumable state written by this project", None
    return "ok", state


def load_resume(path: str, model: torch.nn.Module, trained: Iterable[str], optimizer, scheduler,
                scaler, settings: Dict, allowed: Iterable[str], device, rank: int = 0,
                world: int = 1, log=print, missing_ok: bool = False) -> Optional[Dict]:
    """Restore what save_resume wrote into the model, optimizer, scheduler, scaler and RNG (every
    process calls it: rank 0 reads the file, see read_resume); returns the state (its step and
    `extra` entries), or None when missing_ok and there is no file yet. Errors name the file and
    the reason, on every process."""
    state = read_resume(path, missing_ok)
    if state is None:
        return None
    saved = state.get("settings", state.get("args", {}))    # "args": files of version 0.3.0
    changed = changed_settings(saved, settings, allowed)
    if changed:
        raise SystemExit(f"--resume: {path} was written with other settings, so the resumed run "
                         f"would be neither the old nor a new one: " + "; ".join(changed)
                         + ". Use the original settings, or --resume_allow_changes NAME[,NAME]")
    tensors = state["model_state_dict"]
    expect = set(trained)
    if set(tensors) != expect:
        missing, extra = sorted(expect - set(tensors)), sorted(set(tensors) - expect)
        raise SystemExit(f"--resume: {path} does not match this model (method flags or model "
                         f"card changed?): missing {missing[:5]}, unexpected {extra[:5]}")
    model.load_state_dict(tensors, strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    if len(rngs) != world and rank == 0:
        log(f"warning: {path} was written by {len(rngs)} process(es), now {world}")
    set_rng_state(rngs[min(rank, len(rngs) - 1)], device)    # each process its own entry
    return state
