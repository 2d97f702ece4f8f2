"""What the LLM entry points share around Hugging Face's Trainer: train_math_lorma.py (LoRMA's
MetaMathQA recipe) and NLG/llama/qlora.py (QLoRA's and NOLA's instruction tuning).

- `trainer_class()`: the Trainer subclass. Its checkpoints hold the adapter
  (loralib.save_adapter, checked finite: a diverged adapter is never written) or, fully
  fine-tuned, the model's state dict; resuming loads them back (the Trainer restores the
  optimizer, schedule and RNG states beside them). With --group_by_length, rows that know their
  lengths (instruct_data.Examples: characters, as qlora.py) are grouped by them.
- `JsonLog` (train_log.jsonl; stops the run on a non-finite loss), `StopAfter` (ends a run after
  N steps with its checkpoint saved: tests of resuming).
- `training_arguments(kw)`: TrainingArguments from this code's names, across transformers
  versions (4.x and 5.x renamed several).
  Evaluation rows go in order, as transformers 4.x takes them (5.x groups them by length too).
- `train`: Trainer.train with Ctrl-C as where it stopped and the command that continues.
- `enable_gradient_checkpointing`, `add_pad_token`, `save_final_adapter`.

Importing this module needs no torch or transformers (the scripts' --help runs without them).
"""
import inspect
import json
import math
import os
import sys

import loralib as lora
import traincore

_TRAINER = None


def grouping_by_length(args) -> bool:
    return bool(getattr(args, "group_by_length", False)) or \
        getattr(args, "train_sampling_strategy", None) == "group_by_length"


def trainer_class():
    """The Trainer subclass (made on first use: transformers is imported then)."""
    global _TRAINER
    if _TRAINER is not None:
        return _TRAINER
    import torch
    import transformers

    class AdapterTrainer(transformers.Trainer):
        """Checkpoints hold the adapter (or, fully fine-tuned, the model), not the frozen
        base."""

        def __init__(self, *args, model=None, **kwargs):
            # transformers refuses to train a quantized (k-bit) model unless PEFT adapters are
            # attached, which it reads from this flag; loralib's are, so it is set for that
            # check (made in __init__ only) and taken off again
            mark = model is not None and getattr(model, "loralib_adapter", None) and \
                getattr(model, "is_quantized", False) and \
                not getattr(model, "_hf_peft_config_loaded", False)
            if mark:
                model._hf_peft_config_loaded = True
            try:
                super().__init__(*args, model=model, **kwargs)
            finally:
                if mark:
                    model._hf_peft_config_loaded = False

        def _save(self, output_dir=None, state_dict=None):
            # state_dict: what the Trainer gathered (under FSDP, the whole model's, on rank 0
            # only); the adapter is taken from it. Without one the model is read (unsharded).
            if not self.args.should_save:
                return
            output_dir = output_dir or self.args.output_dir
            os.makedirs(output_dir, exist_ok=True)
            if getattr(self.model, "loralib_adapter", None):
                try:
                    traincore.check_finite_state(
                        lora.lora_state_dict(self.model, state_dict=state_dict), output_dir)
                except traincore.NonFiniteError as e:
                    raise traincore.NonFiniteError(f"training diverged by step "
                                                   f"{self.state.global_step}: {e}") from None
                lora.save_adapter(self.model, output_dir, state_dict=state_dict, write=True)
            else:
                torch.save(self.model.state_dict() if state_dict is None else state_dict,
                           os.path.join(output_dir, "model_state.pt"))

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            model = model or self.model
            if getattr(model, "loralib_adapter", None):
                lora.load_adapter(model, resume_from_checkpoint)
            else:
                model.load_state_dict(torch.load(os.path.join(resume_from_checkpoint,
                                                              "model_state.pt"),
                                                 weights_only=True))

        def _get_train_sampler(self, *args, **kwargs):
            dataset = (args[0] if args else kwargs.get("train_dataset")) or self.train_dataset
            lengths = getattr(dataset, "lengths", None)
            if lengths is not None and grouping_by_length(self.args):
                # transformers reads lengths from a `datasets` column or from input_ids; these
                # rows are text until the collator tokenizes them
                from transformers.trainer_pt_utils import LengthGroupedSampler
                return LengthGroupedSampler(
                    self.args.train_batch_size * self.args.gradient_accumulation_steps,
                    dataset=dataset, lengths=lengths)
            return super()._get_train_sampler(*args, **kwargs)

        def _get_eval_sampler(self, eval_dataset):
            if getattr(eval_dataset, "lengths", None) is not None and \
                    grouping_by_length(self.args):
                # in order, as transformers 4.x (qlora.py's) evaluates whatever the grouping of
                # training rows (5.x groups evaluation rows too, by tokens it cannot see here)
                return torch.utils.data.SequentialSampler(eval_dataset) \
                    if self.args.world_size <= 1 else None
            return super()._get_eval_sampler(eval_dataset)

    _TRAINER = AdapterTrainer
    return _TRAINER


def callbacks(save_path: str, stop_after_steps=None):
    """[JsonLog, StopAfter]: the log file (and the divergence stop), the early end."""
    import transformers

    class JsonLog(transformers.TrainerCallback):
        def on_log(self, targs, state, control, logs=None, **kw):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                raise traincore.NonFiniteError(f"the training loss is {loss} at step "
                                               f"{state.global_step}: stopped, nothing of it "
                                               f"saved (a lower --learning_rate usually helps)")
            if state.is_world_process_zero and logs:
                with open(os.path.join(save_path, "train_log.jsonl"), "a") as f:
                    f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    class StopAfter(transformers.TrainerCallback):
        def on_step_end(self, targs, state, control, **kw):
            if stop_after_steps and state.global_step >= stop_after_steps:
                control.should_save = control.should_training_stop = True

    return [JsonLog(), StopAfter()]


def training_arguments(kw):
    """TrainingArguments from `kw` in this code's names: eval_strategy (4.x:
    evaluation_strategy), warmup_ratio (5.x: a warmup_steps below 1), group_by_length (5.x:
    train_sampling_strategy), logging_dir (gone in 5.x); the CPU when there is no GPU."""
    import torch
    import transformers
    known = inspect.signature(transformers.TrainingArguments.__init__).parameters
    kw = dict(kw)
    if "eval_strategy" in kw and "eval_strategy" not in known:
        kw["evaluation_strategy"] = kw.pop("eval_strategy")
    if "warmup_ratio" in kw and "warmup_ratio" not in known:
        kw["warmup_steps"] = float(kw.pop("warmup_ratio"))
    if kw.pop("group_by_length", False):
        if "train_sampling_strategy" in known:
            kw["train_sampling_strategy"] = "group_by_length"
        else:
            kw["group_by_length"] = True
    if "logging_dir" in kw and "logging_dir" not in known:
        del kw["logging_dir"]
    if not torch.cuda.is_available() and "use_cpu" in known:
        kw["use_cpu"] = True          # bf16 autocast on the CPU (tests, smoke runs)
    kw.setdefault("disable_tqdm", not sys.stderr.isatty())
    return kw


def enable_gradient_checkpointing(model, kwargs) -> None:
    """Recompute activations in backward (kwargs: torch.utils.checkpoint's); the embeddings'
    output is made to require grad when they are frozen."""
    kwargs = dict(kwargs)
    if hasattr(model, "activation_checkpointing_enable"):       # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if not model.get_input_embeddings().weight.requires_grad:
        # With the embeddings frozen, no input of a checkpointed layer requires grad: the
        # reentrant checkpoint would then give the adapters inside no gradient at all.
        # transformers 5 does this itself; 4.x only for PEFT models.
        model.enable_input_require_grads()


def add_pad_token(tokenizer, model, token: str = "[PAD]") -> None:
    """The official smart_tokenizer_and_embedding_resize (LoRMA's train_math_lorma.py, QLoRA's
    qlora.py 442-462): a pad token whose input and output embedding rows start at the mean of
    the others."""
    import torch
    old = model.get_input_embeddings().weight.shape[0]
    tokenizer.add_special_tokens({"pad_token": token})
    # (no random init of the new rows first: they are set to the mean below)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        for emb in (model.get_input_embeddings(), model.get_output_embeddings()):
            if emb is not None and emb.weight.shape[0] > old:
                emb.weight[old:] = emb.weight[:old].mean(dim=0, keepdim=True)


def train(trainer, resume, checkpoints: str, save_every: str, flag):
    """trainer.train(resume_from_checkpoint=resume); Ctrl-C becomes the sentence saying the
    step reached, the last checkpoint in `checkpoints` (saved every `save_every`) and the
    command that continues (with `flag`; None: the same command resumes by itself)."""
    try:
        return trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:
        from transformers.trainer_utils import get_last_checkpoint
        from traincore import cli
        last = get_last_checkpoint(checkpoints) if os.path.isdir(checkpoints) else None
        saved = int(last.rsplit("-", 1)[1]) if last else None
        raise cli.interrupted_run(trainer.state.global_step, trainer.state.max_steps, saved,
                                  save_every, flag) from None


def save_final_adapter(live, folder: str, base_model: str, what: str) -> None:
    """The trained adapter of `live` (every rank calls this: under FSDP reading it is a
    collective; rank 0 writes) into `folder`, refused when not finite."""
    try:
        traincore.check_finite_state(lora.lora_state_dict(live), folder)
    except traincore.NonFiniteError as e:
        raise SystemExit(f"{what}: training diverged: {e}")
    lora.save_adapter(live, folder, base_model=base_model)
