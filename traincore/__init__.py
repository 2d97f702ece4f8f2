"""What the project's trainers share (torch only): the launcher's processes and collectives,
precision, seeding, atomic files, checkpoint reading, the resumable state, the run log, the
optimizer-step loop, one run per work dir and no silent divergence."""
from .files import (remove_stale_temporaries, save_atomic, save_finite, write_atomic, write_json_atomic,
                    write_text_atomic)
from .guard import LossWatch, NonFiniteError, check_finite_state
from .jsonlog import read_jsonl
from .loop import TrainLoop
from .precision import Precision
from .processes import Processes, all_reduce_sum, barrier, broadcast_object, gather_objects
from .resume import allowed_changes, changed_settings, load_resume, save_resume
from .rng import rng_state, seed_all, set_rng_state
from .runlog import RunLog
from .statefile import check_backbone, few, read_checkpoint, unwrap_state_dict
from .workdir import WorkDirBusy, claim_work_dir, release_work_dir
