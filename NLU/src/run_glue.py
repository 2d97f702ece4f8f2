"""Fine-tune RoBERTa on a GLUE task with one loralib method (or fully), then evaluate on dev.

    python src/run_glue.py --task_name mrpc --data_dir data/glue \
        --tokenizer_dir pretrained_checkpoints/roberta-base \
        --model_card roberta-base --init_checkpoint pretrained_checkpoints/roberta-base-pytorch_model.bin \
        --adapter_checkpoint mnli/pytorch_model.bin \
        --max_seq_length 512 --per_device_train_batch_size 16 --learning_rate 4e-4 \
        --num_train_epochs 30 --warmup_ratio 0.06 --weight_decay 0.1 --seed 0 \
        --lora_dim 8 --lora_alpha 8 --output_dir out/mrpc
Several processes: `torchrun --nproc_per_node=N src/run_glue.py ...` (or
`python -m torch.distributed.launch --use_env ...`); NCCL on GPUs, gloo on CPU, one process per
GPU. The batch size is per process, as in Hugging Face's run_glue.py. --resume works on several
machines without a shared --output_dir (rank 0 reads resume.pt and sends its state to the
others). Precision: fp32 by default (the official runs), --tf32, --bf16 or --fp16.

The method comes from loralib's flags (--method, --lora_dim, --lorma_type, --mtlora_structure,
--nola_*; see loralib/cli.py); without them the model is fully fine-tuned. With an adapter, only
the adapter and the classifier head train.

Outputs in --output_dir:
  pytorch_model.bin   adapter + classifier head (`roberta...lora_*` + `classifier.*`, the layout of
                      Microsoft's released NLU adapters); every tensor for full fine-tuning.
                      Usable as --adapter_checkpoint of a later run (e.g. MNLI -> MRPC/RTE/STS-B:
                      the head is skipped when the label count differs).
  best_model.bin      the same at the best dev epoch (--evaluation_strategy epoch; the metric
                      the LoRA paper reports: MCC, Pearson, else accuracy)
  eval_results.json   dev metrics of the last model; with --evaluation_strategy epoch also
                      every epoch's and the best one
  run_config.json     the arguments, the method and the model config
  train_log.jsonl     loss / learning rate every --logging_steps
"""
if not __package__:  # run as a file (python src/run_glue.py), as in Microsoft's repo
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlu")
import argparse
import os

import loralib as lora
from traincore.cli import setup_parser, run

# Only what the command line needs is imported here, so that --help answers without torch; the
# run itself is nlu/glue_run.py.


def build_parser(defaults=None):
    p = argparse.ArgumentParser(description="Fine-tune RoBERTa on GLUE with a loralib method",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("task, data and model")
    g.add_argument("--task_name", required=True, help="cola sst2 mrpc stsb qqp mnli qnli rte")
    g.add_argument("--data_dir", default=os.environ.get("GLUE_DIR", "data/glue"),
                   help="GLUE root (with CoLA/, SST-2/, ...) or the task's own folder")
    g.add_argument("--tokenizer_dir", default="pretrained_checkpoints/roberta-base",
                   help="folder with vocab.json + merges.txt (or encoder.json + vocab.bpe)")
    g.add_argument("--model_card", default="roberta-base",
                   help="roberta-base | roberta-large | roberta-tiny, or a config.json")
    g.add_argument("--init_checkpoint", default=None,
                   help="pretrained RoBERTa pytorch_model.bin (HF keys) or a full checkpoint")
    g.add_argument("--adapter_checkpoint", "--lora_path", dest="adapter_checkpoint", default=None,
                   help="adapter (+ head) to start from, e.g. an MNLI run's pytorch_model.bin")
    g.add_argument("--random_init", action="store_true",
                   help="allow a random backbone (tests, smoke runs)")
    g.add_argument("--max_seq_length", type=int, default=512)
    g.add_argument("--max_train_samples", type=int, default=None)
    g.add_argument("--max_eval_samples", type=int, default=None)
    g.add_argument("--cls_dropout", type=float, default=None,
                   help="dropout of the classifier head (default: hidden_dropout_prob)")
    g = p.add_argument_group("training")
    g.add_argument("--per_device_train_batch_size", type=int, default=16)
    g.add_argument("--gradient_accumulation_steps", type=int, default=1,
                   help="micro-batches per optimizer step (the update of one batch N times "
                        "larger)")
    g.add_argument("--learning_rate", type=float, default=5e-4)
    g.add_argument("--classifier_lr", type=float, default=None,
                   help="learning rate of the classifier head (default: --learning_rate)")
    g.add_argument("--num_train_epochs", type=float, default=3.0)
    g.add_argument("--max_steps", type=int, default=-1, help="> 0: total updates (overrides epochs)")
    g.add_argument("--warmup_ratio", type=float, default=0.06)
    g.add_argument("--weight_decay", type=float, default=0.1)
    g.add_argument("--adam_beta1", type=float, default=0.9)
    g.add_argument("--adam_beta2", type=float, default=0.999)
    g.add_argument("--adam_epsilon", type=float, default=1e-8)
    g.add_argument("--max_grad_norm", type=float, default=1.0, help="0: no clipping")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--fp16", action="store_true",
                   help="fp16 autocast + loss scaling (GPU or CPU; traincore/precision.py)")
    g.add_argument("--bf16", action="store_true",
                   help="bf16 autocast (GPU or CPU): products in bf16 (8-bit mantissa), weights, "
                        "optimizer and loss in fp32")
    g.add_argument("--tf32", action="store_true",
                   help="TF32 products for fp32 tensors on Ampere and newer GPUs (10-bit "
                        "mantissa inputs, fp32 sums); without it and --bf16 / --fp16 every "
                        "product is fp32, as in the official runs")
    g.add_argument("--do_train", action="store_true", help="(neither --do_train nor --do_eval: both)")
    g = p.add_argument_group("evaluation")
    g.add_argument("--do_eval", action="store_true")
    g.add_argument("--evaluation_strategy", default="end", choices=("no", "end", "epoch"),
                   help="evaluate on dev after every epoch (the papers report the best), "
                        "only at the end, or never")
    g.add_argument("--per_device_eval_batch_size", type=int, default=64)
    g = p.add_argument_group("output, logging, resuming, processes")
    g.add_argument("--output_dir", required=True)
    g.add_argument("--overwrite_output_dir", action="store_true",
                   help="replace a finished run in --output_dir (without it, refused)")
    g.add_argument("--logging_steps", type=int, default=10)
    g.add_argument("--save_steps", type=int, default=500,
                   help="optimizer steps between resumable states (resume.pt; also every epoch)")
    g.add_argument("--resume", action="store_true",
                   help="continue a killed run from <output_dir>/resume.pt, bit for bit")
    g.add_argument("--resume_allow_changes", default="",
                   help="comma-separated settings --resume may change (see glue_train.py)")
    g.add_argument("--stop_after_steps", type=int, default=None,
                   help="end after N steps with the resumable state saved (tests of --resume)")
    g.add_argument("--no_tensorboard", action="store_true", help="no TensorBoard scalars")
    g.add_argument("--local_rank", "--local-rank", dest="local_rank", type=int, default=None,
                   help="passed by torch.distributed.launch without --use_env; LOCAL_RANK from "
                        "the environment takes precedence")
    setup_parser(p, g)
    lora.add_method_args(p)
    if defaults:
        p.set_defaults(**defaults)
    return p


def main(argv=None, defaults=None):
    args = build_parser(defaults).parse_args(argv)
    from nlu.glue_run import run_task                # torch from here on
    from traincore import NonFiniteError, WorkDirBusy, release_work_dir
    try:
        return run_task(args)
    except (WorkDirBusy, NonFiniteError) as e:
        raise SystemExit(f"run_glue: {e}")
    finally:
        release_work_dir(args.output_dir)


if __name__ == "__main__":
    run("run_glue.py", main)
