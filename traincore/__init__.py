"""What the project's trainers share (torch only): the launcher's processes and collectives,
precision, seeding, atomic files, checkpoint reading, the resumable state, the run log, the
optimizer-step loop, one run per work dir and no silent divergence.

Names load on first use (PEP 562): the text tools (format converters, encoder, decoder, scorers)
and the entry helper import traincore.cli / traincore.entry without paying for torch's import.
"""
import importlib

_HOME = {
    "compiling": ("compiled",),
    "files": ("remove_stale_temporaries", "save_atomic", "save_finite", "write_atomic", "write_json_atomic",
              "write_text_atomic"),
    "guard": ("LossWatch", "NonFiniteError", "check_finite_state"),
    "jsonlog": ("read_jsonl",),
    "loop": ("TrainLoop",),
    "precision": ("Precision",),
    "processes": ("Processes", "all_reduce_sum", "barrier", "broadcast_object", "broadcast_state",
                  "gather_objects", "gpu_of", "is_main_process"),
    "resume": ("allowed_changes", "changed_settings", "load_resume", "read_resume", "save_resume"),
    "rng": ("rng_state", "seed_all", "set_rng_state"),
    "runlog": ("RunLog",),
    "statefile": ("check_backbone", "few", "read_checkpoint", "unwrap_state_dict"),
    "workdir": ("WorkDirBusy", "claim_work_dir", "release_work_dir"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'traincore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
