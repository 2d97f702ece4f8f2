"""The resumable state (resume.pt): what a killed run needs to continue bit for bit.

It holds the trained tensors (the frozen backbone comes again from the pretrained file), the
optimizer, scheduler and loss scaler, the RNG state of every process, the step and the data
position (`extra`), and the settings that decide what the steps compute: a resume with other
settings would be neither the old run nor a new one, so it is refused unless the setting is
named in --resume_allow_changes.
"""
from typing import Dict, Iterable, List, Optional

import torch

from .files import save_finite
from .processes import gather_objects
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


def load_resume(path: str, model: torch.nn.Module, trained: Iterable[str], optimizer, scheduler,
                scaler, settings: Dict, allowed: Iterable[str], device, rank: int = 0,
                world: int = 1, log=print) -> Dict:
    """Restore what save_resume wrote into the model, optimizer, scheduler, scaler and RNG;
    returns the state (its step and `extra` entries). Errors name the file and the reason."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"--resume: {path} not found (it is written every few steps)") from None
    except Exception as e:
        raise SystemExit(f"--resume: {path} is not a readable resumable state (torch.load with "
                         f"weights_only=True failed: {type(e).__name__})") from None
    if not isinstance(state, dict) or "optimizer" not in state or "step" not in state:
        raise SystemExit(f"--resume: {path} is not a resumable state written by this project")
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
    set_rng_state(rngs[min(rank, len(rngs) - 1)], device)
    return state
