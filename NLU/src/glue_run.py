"""The run of run_glue.py (its command line is there): the task's data tokenized, the model built
and loaded, training with evaluation on dev (glue_train.py), the outputs written."""
import os
import time

import torch

from nlu.roberta import (RobertaForSequenceClassification, config_from_card, load_weights,
                         lora, trainable_state_dict)
from nlu.glue_data import RobertaTokenizer, encode_examples, load_split, num_labels, task_spec
from nlu.glue_metrics import glue_metrics
from nlu import glue_train
from nlg import method_flags
from traincore import (Precision, Processes, barrier, claim_work_dir, gather_objects,
                       remove_stale_temporaries, save_finite, seed_all, write_json_atomic)

# What a run writes in --output_dir (removed first when --overwrite_output_dir replaces a run).
RUN_OUTPUTS = ("pytorch_model.bin", "best_model.bin", "adapter_config.json", "train_log.jsonl",
               "eval_results.json", "run_config.json", "tensorboard", "resume.pt")


def collate(batch, pad_id, regression):
    """Pad to the longest example of the batch; also the flat indices of its real tokens
    (the model's token_rows), found here on the host so that a GPU step needs no sync."""
    longest = max(len(ids) for _, ids, _ in batch)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for i, (_, x, _) in enumerate(batch):
        ids[i, :len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, :len(x)] = 1
    labels = torch.tensor([y for _, _, y in batch],
                          dtype=torch.float32 if regression else torch.long)
    index = torch.tensor([i for i, _, _ in batch], dtype=torch.long)
    rows = torch.cat([torch.arange(i * longest, i * longest + len(x)) for i, (_, x, _) in enumerate(batch)])
    return index, ids, mask, labels, rows


class Indexed(torch.utils.data.Dataset):
    def __init__(self, encoded):
        self.items = [(i, ids, y) for i, (ids, y) in enumerate(encoded)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


# ----------------------------------------------------------------------------------------------
# Train / eval

def build_optimizer(model, args, device):
    no_decay = ("bias", "LayerNorm.weight")
    groups = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        head = n.startswith("classifier.")
        decay = not any(nd in n for nd in no_decay)
        key = (head, decay)
        groups.setdefault(key, []).append(p)
    param_groups = []
    for (head, decay), params in groups.items():
        lr = args.classifier_lr if (head and args.classifier_lr is not None) else args.learning_rate
        param_groups.append({"params": params, "lr": lr,
                             "weight_decay": args.weight_decay if decay else 0.0})
    kw = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(param_groups, betas=(args.adam_beta1, args.adam_beta2),
                             eps=args.adam_epsilon, **kw)


@torch.no_grad()
def evaluate(model, encoded, args, dist_env, pad_id, task):
    """Dev metrics; each process scores a shard, predictions are gathered in file order."""
    regression = num_labels(task) == 1
    model.eval()
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # less padding
    mine = order[dist_env.rank::dist_env.world]
    data = Indexed(encoded)
    preds = {}
    bs = args.per_device_eval_batch_size
    for s in range(0, len(mine), bs):
        batch = [data[i] for i in mine[s:s + bs]]
        index, ids, mask, _, rows = collate(batch, pad_id, regression)
        dev = dist_env.device
        with Precision.from_flags(args.fp16, args.bf16, dev, tf32=args.tf32).autocast():
            logits = model(ids.to(dev), mask.to(dev), token_rows=rows.to(dev))
        logits = logits.float().cpu()
        out = logits.squeeze(-1) if regression else logits.argmax(-1)
        preds.update(zip(index.tolist(), out.tolist()))
    merged = {}
    for part in gather_objects(preds):
        merged.update(part)
    p = [merged[i] for i in range(len(encoded))]
    y = [lab for _, lab in encoded]
    model.train()
    return glue_metrics(task, p, y)


def run_eval(model, dev_sets, args, dist_env, pad_id):
    out = {}
    for name, enc in dev_sets.items():
        for k, v in evaluate(model, enc, args, dist_env, pad_id, args.task_name).items():
            # MNLI's keys name the file (dev_matched_accuracy) even when only one is present.
            out[f"{name}_{k}" if len(task_spec(args.task_name).dev_files) > 1 else k] = v
    return out


RECORD = "adapter_config.json"   # beside pytorch_model.bin: how the adapter was trained


def method_record(method, cfg):
    return {"peft_type": None, "loralib": {**method.to_dict(), "format": "loralib-nlu",
                                           "weights": "pytorch_model.bin",
                                           "base_model": {"card": cfg.to_dict()},
                                           "loralib_version": lora.__version__}}


def stored_method(adapter_checkpoint):
    """The MethodConfig recorded beside an adapter file (None: a file without a record, e.g.
    Microsoft's released adapters)."""
    if not adapter_checkpoint:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(adapter_checkpoint)), RECORD)
    if not os.path.isfile(path):
        return None
    meta = lora.read_adapter_config(os.path.dirname(path)).get("loralib")
    if not isinstance(meta, dict):
        return None
    keep = ("method", "r", "alpha", "dropout", "options", "targets", "pipeline")
    try:
        return lora.MethodConfig.from_dict({k: meta[k] for k in keep if k in meta})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: recorded method is not valid here ({e})") from None


def resolve_method(args):
    """The flags' method, or the one recorded beside --adapter_checkpoint: then every method
    flag given must agree with the record, or it is an error naming the flag and both values
    (nlg/method_flags.py)."""
    stored = stored_method(args.adapter_checkpoint)
    return method_flags.resolve(args, stored, f"--adapter_checkpoint {args.adapter_checkpoint}",
                                "roberta", default="full")


def run_task(args):
    """What run_glue.py runs once its command line is parsed."""
    if not args.do_train and not args.do_eval:
        args.do_train = args.do_eval = True
    if args.fp16 and args.bf16:
        raise ValueError("--fp16 and --bf16 are exclusive")
    for name in ("gradient_accumulation_steps", "save_steps", "logging_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
    task_spec(args.task_name)            # an unknown task: said before anything is created
    for flag in ("data_dir", "tokenizer_dir"):
        if not os.path.isdir(getattr(args, flag)):
            raise FileNotFoundError(f"--{flag} {getattr(args, flag)}: no such folder"
                                    + (" (create_datasets.sh --tasks glue)" if flag == "data_dir"
                                       else " (download_pretrained_checkpoints.sh --models nlu)"))
    procs = Processes(args.local_rank)
    Precision.from_flags(args.fp16, args.bf16, procs.device, tf32=args.tf32).apply()
    log = print if procs.main else (lambda *a, **k: None)
    seed_all(args.seed)
    method = resolve_method(args)
    if procs.main:
        claim_work_dir(args.output_dir, overwrite=args.overwrite_output_dir,
                       resuming=args.resume,
                       occupied=("pytorch_model.bin", "resume.pt") if args.do_train else (),
                       outputs=RUN_OUTPUTS, overwrite_flag="--overwrite_output_dir")
        remove_stale_temporaries(args.output_dir, RUN_OUTPUTS)
    try:
        tok = RobertaTokenizer(args.tokenizer_dir)
        cfg = _model_config(args, tok, method)
        train, dev_sets = _encode_data(args, tok, cfg, procs, log)
        model = _build_model(args, cfg, method, procs.device, log)
        os.makedirs(args.output_dir, exist_ok=True)
        results = _train_and_evaluate(args, model, cfg, method, tok, train, dev_sets, procs, log)
        barrier()
        return results
    finally:
        procs.close()


def _model_config(args, tok, method):
    cfg = config_from_card(args.model_card, num_labels=num_labels(args.task_name),
                           classifier_dropout=args.cls_dropout, method=method)
    if tok.vocab_size > cfg.vocab_size:
        raise ValueError(f"{args.tokenizer_dir}: vocabulary of {tok.vocab_size} ids does not fit "
                         f"the model's vocab_size {cfg.vocab_size} ({args.model_card})")
    if tok.pad_id != cfg.pad_token_id:
        raise ValueError(f"{args.tokenizer_dir}: <pad> is id {tok.pad_id}, the model's "
                         f"pad_token_id is {cfg.pad_token_id}")
    return cfg


def _encode_data(args, tok, cfg, procs, log):
    """(train examples, {dev split: examples}) as token ids."""
    max_len = min(args.max_seq_length, cfg.max_position_embeddings - cfg.pad_token_id - 1)

    def encode(examples, limit):
        examples = examples[:limit] if limit else examples
        if not procs.distributed:
            return encode_examples(tok, examples, max_len)
        # The BPE is pure Python: each process encodes every world-th example, then all share.
        parts = gather_objects(encode_examples(tok, examples[procs.rank::procs.world], max_len))
        out = [None] * len(examples)
        for r, part in enumerate(parts):
            out[r::procs.world] = part
        return out

    t0 = time.time()
    train = encode(load_split(args.data_dir, args.task_name, "train")["train"],
                   args.max_train_samples) if args.do_train else []
    dev_sets = {k: encode(v, args.max_eval_samples)
                for k, v in load_split(args.data_dir, args.task_name, "dev").items()} \
        if args.do_eval else {}
    log(f"task {args.task_name}: {len(train)} train examples; dev: "
        f"{', '.join(f'{k} {len(v)}' for k, v in dev_sets.items()) or 'none'} "
        f"(tokenized in {time.time() - t0:.1f}s)")
    return train, dev_sets


def _build_model(args, cfg, method, device, log):
    # Without --random_init the loader refuses a checkpoint lacking any backbone tensor, so
    # their random draws would only be overwritten.
    model = RobertaForSequenceClassification(
        cfg, init_backbone=args.random_init or args.init_checkpoint is None)
    info = load_weights(model, args.init_checkpoint, args.adapter_checkpoint,
                        random_init=args.random_init, log=log)
    log(f"loaded: {len(info['backbone'])} backbone, {len(info['adapter'])} adapter, "
        f"{len(info['classifier'])} classifier tensors")
    if cfg.adapter is not None:
        lora.mark_only_lora_as_trainable(model)
        for p in model.classifier.parameters():
            p.requires_grad = True
    log(f"method: {method.to_dict()}")
    for note in method.notes():
        log(f"note: {note}")
    log(lora.parameter_report(model))
    return model.to(device)


def _train_loader(args, train, pad_id, procs):
    if not train:
        raise ValueError(f"no training examples for {args.task_name} in {args.data_dir}")
    regression = task_spec(args.task_name).labels is None
    data = Indexed(train)
    sampler = torch.utils.data.DistributedSampler(data, num_replicas=procs.world,
                                                  rank=procs.rank, shuffle=True, seed=args.seed)
    loader = torch.utils.data.DataLoader(
        data, batch_size=args.per_device_train_batch_size, sampler=sampler,
        collate_fn=lambda b: collate(b, pad_id, regression),
        pin_memory=procs.device.type == "cuda",
        # its own generator: creating an epoch's iterator then draws nothing from the
        # global RNG that dropout uses, so a resumed run draws the same dropout masks
        generator=torch.Generator().manual_seed(args.seed))
    return loader, sampler


def _train_and_evaluate(args, model, cfg, method, tok, train, dev_sets, procs, log):
    out_dir = args.output_dir
    tracking = {"history": [], "best": None}   # per-epoch evaluations (kept on resume)
    results = {}
    key = task_spec(args.task_name).reported

    def on_epoch_end(epoch, step):
        """Per-epoch evaluation (the papers report the best epoch); keeps best_model.bin."""
        if not (args.do_eval and args.evaluation_strategy == "epoch"):
            return
        m = run_eval(model, dev_sets, args, procs, tok.pad_id)
        tracking["history"].append({"epoch": epoch, "step": step, **m})
        log(f"eval epoch {epoch}: {m}")
        if tracking["best"] is None or m[key] > tracking["best"][key]:
            tracking["best"] = tracking["history"][-1]
            if procs.main:
                save_finite(trainable_state_dict(model), os.path.join(out_dir, "best_model.bin"))
        results.clear()
        results.update(m)

    if args.do_train:
        loader, sampler = _train_loader(args, train, tok.pad_id, procs)
        run = glue_train.GlueTraining(model, procs.wrap(model), loader, sampler, args, procs, log,
                                      glue_train.resume_settings(args, procs, method), tracking,
                                      build_optimizer)
        if not run.run(on_epoch_end):
            return {}
        if procs.main:
            save_finite(trainable_state_dict(model), os.path.join(out_dir, "pytorch_model.bin"))
            write_json_atomic(method_record(method, cfg), os.path.join(out_dir, RECORD))
            log(f"saved {os.path.join(out_dir, 'pytorch_model.bin')}")
            if os.path.exists(run.resume_path):
                os.unlink(run.resume_path)    # finished: nothing to resume
    history, best = tracking["history"], tracking["best"]
    if args.do_eval and args.evaluation_strategy != "no" and not history:
        results = run_eval(model, dev_sets, args, procs, tok.pad_id)
        log(f"eval: {results}")
    if procs.main:
        out = {"task": args.task_name, **results}
        if history:
            out.update(per_epoch=history, best_metric=key, best=best)
        write_json_atomic(out, os.path.join(out_dir, "eval_results.json"))
        trainable, _ = lora.count_parameters(model)
        write_json_atomic({"args": vars(args), "method": method.to_dict(), "model": cfg.to_dict(),
                           "trainable_params": trainable},
                          os.path.join(out_dir, "run_config.json"))
    return results
