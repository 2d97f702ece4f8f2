"""run_glue.py's training steps queue on a GPU without waiting for it (tests/host_reads.py)."""
from host_reads import count_host_reads
from test_nlu_resume import args


def test_glue_training_steps_do_not_wait_on_the_device(shared_data, tmp_path):
    """5 steps read from the device exactly what 2 steps read (the last step's log line and the
    final save): nothing per step, with accumulation and clipping on."""
    from nlu import run_glue
    got = []
    for steps in (2, 5):
        with count_host_reads() as counts:
            run_glue.main(args(shared_data, tmp_path / f"s{steps}", "--max_steps", str(steps),
                               "--per_device_train_batch_size", "2",
                               "--gradient_accumulation_steps", "2", "--logging_steps", "1000",
                               "--save_steps", "1000", "--evaluation_strategy", "no",
                               "--no_tensorboard"))
        got.append(counts)
    assert got[0] == got[1], (got[0], got[1])
