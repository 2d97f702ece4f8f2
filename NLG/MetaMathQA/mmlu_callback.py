"""MMLU during training, as qlora.py's MMLUEvalCallback (lines 739-800): at every evaluation
(each --eval_steps with --evaluation_strategy steps, and the final trainer.evaluate() of
--do_eval) the model answers the MMLU rows through mmlu.evaluate, under the Trainer's autocast
(as its prediction_step runs); the Trainer logs qlora.py's values (mmlu_loss,
mmlu_<split>_accuracy and one accuracy per subject), and `mmlu_results.json` in the run folder
gets the latest results (mmlu.record: the format nlg.report reads) with "step" and the
"history" of every evaluation (a resumed run keeps the earlier ones).

qlora.py's final evaluation repeats the one at the last training step (NOLA's scripts have
eval_steps = max_steps) on the same weights: here that step's results are logged again rather
than computed twice. Under several processes each computes the same results; rank 0 writes.
"""
import json
import os
from typing import Dict, Sequence

import mmlu

RESULTS_FILE = "mmlu_results.json"


def mmlu_callback(rows: Sequence[Dict[str, str]], tokenizer, *, dataset: str, split: str,
                  data_file: str, batch_size: int, source_max_len: int, target_max_len: int,
                  out_dir: str):
    """A TrainerCallback; set its `trainer` attribute to the Trainer before training."""
    import transformers

    class MMLUEvalCallback(transformers.TrainerCallback):
        trainer = None

        def __init__(self):
            self.history, self.last = [], None
            path = os.path.join(out_dir, RESULTS_FILE)
            if os.path.isfile(path):        # a resumed run: the evaluations before the stop
                with open(path, encoding="utf-8") as f:
                    self.history = json.load(f).get("history", [])

        def on_evaluate(self, args, state, control, **kw):
            step = state.global_step
            if self.last is None or self.last[0] != step:
                trainer = self.trainer
                with trainer.autocast_smart_context_manager():
                    run = mmlu.evaluate(trainer.model, tokenizer, rows, split=split,
                                        batch_size=batch_size, source_max_len=source_max_len,
                                        target_max_len=target_max_len)
                record = mmlu.record(rows, run, dataset=dataset, split=split,
                                     data_file=data_file)
                key = f"mmlu_{record['split']}_accuracy"
                self.history = [h for h in self.history if h["step"] < step] + [
                    {"step": step, "mmlu_loss": record["mmlu_loss"], key: record[key]}]
                self.last = (step, run["results"])
                if state.is_world_process_zero:
                    path = os.path.join(out_dir, RESULTS_FILE)
                    with open(path + ".tmp", "w", encoding="utf-8") as f:
                        json.dump({**record, "step": step, "history": self.history}, f,
                                  indent=2)
                    os.replace(path + ".tmp", path)
            self.trainer.log(dict(self.last[1]))

    return MMLUEvalCallback()
