"""What the project's trainers share (torch only): one run per work dir, no silent divergence,
resume only with the settings that produced the state, logs that survive a kill."""
from .guard import LossWatch, NonFiniteError, check_finite_state
from .jsonlog import read_jsonl
from .resume import changed_settings
from .rng import rng_state, set_rng_state
from .workdir import WorkDirBusy, claim_work_dir, release_work_dir
