#!/usr/bin/env bash
# The one GLUE pipeline behind every roberta_*.sh script: fine-tune RoBERTa with a loralib
# method on one task, then evaluate on dev (eval_results.json in the output folder).
#
# Set by the calling script: MODEL_SIZE (base|large) TASK METHOD_NAME METHOD_ARGS BATCH_SIZE
#   EPOCHS LR MAX_SEQ_LENGTH WEIGHT_DECAY WARMUP_RATIO SEED FROM_MNLI [CLS_LR]
# Overridable from the environment (defaults relative to NLU/):
#   MODEL_CARD       roberta-$MODEL_SIZE (or roberta-tiny, or a config.json)
#   INIT_CHECKPOINT  pretrained_checkpoints/roberta-$MODEL_SIZE/pytorch_model.bin
#                    (empty with RANDOM_INIT=1: a random backbone, for smoke tests)
#   TOKENIZER_DIR    pretrained_checkpoints/roberta-$MODEL_SIZE (vocab.json + merges.txt)
#   DATA_DIR         data/glue (download_glue_data.py layout)
#   OUTPUT_DIR       trained_models/roberta_${MODEL_SIZE}_${METHOD_NAME}/$TASK/seed_$SEED
#   MNLI_ADAPTER     for MRPC/RTE/STS-B (FROM_MNLI=1): the MNLI run's pytorch_model.bin
#                    (default: that run's output folder); "none" starts from scratch
#   num_gpus         processes (torchrun) — default: the visible GPU count, at least 1
#   MAX_STEPS MAX_TRAIN_SAMPLES MAX_EVAL_SAMPLES EVAL_STRATEGY (epoch|end|no) RANDOM_INIT PYTHON
#   PRECISION        fp32|tf32|bf16 (default fp32), for training and evaluation:
#                    fp32  every product in float32, as the official runs (the published numbers);
#                    tf32  float32 tensors, TF32 products on Ampere and newer GPUs (--tf32):
#                          faster matmuls, inputs rounded to a 10-bit mantissa (~1e-3 relative);
#                    bf16  bf16 autocast (--bf16): less activation memory, an 8-bit mantissa
#                          (~4e-3 relative); dev metrics may move by a few tenths of a point, so
#                          compare runs of one precision only.
# Arguments are passed on to src/run_glue.py (e.g. --overwrite_output_dir to replace a finished
# run in OUTPUT_DIR, which is refused otherwise; --resume to continue a stopped one); --help
# shows this text.
# --smoke (among the arguments): this script's pipeline offline on tiny data in seconds, to check
#   a set-up before a long run: every GLUE task's files in the real layout and a byte-level
#   vocabulary for them (src/run_glue_smoke.py, written once into SMOKE_DIR, default
#   NLU/smoke_out), a random roberta-tiny, SMOKE_STEPS (default 20) steps at batch 8, length 64,
#   then dev evaluation; MRPC / RTE / STS-B start from scratch instead of the MNLI adapter.
#   The method, its flags and PRECISION are the script's own. Outputs: SMOKE_DIR/runs/.
set -euo pipefail
NLU_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
case "${1:-}" in
  -h|--help)
    awk 'NR > 1 && !/^#/ { exit } NR > 1' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    echo "run_glue.py's own flags: $PYTHON $NLU_DIR/src/run_glue.py --help"
    exit 0 ;;
esac
case "${PRECISION:=fp32}" in
  fp32) precision_args=() ;;
  tf32) precision_args=(--tf32) ;;
  bf16) precision_args=(--bf16) ;;
  *) echo "run_glue_task.sh: PRECISION must be fp32, tf32 or bf16, got '$PRECISION'" >&2; exit 2 ;;
esac

for v in MODEL_SIZE TASK METHOD_NAME METHOD_ARGS BATCH_SIZE EPOCHS LR MAX_SEQ_LENGTH SEED; do
  if [ -z "${!v:-}" ]; then
    echo "run_glue_task.sh: $v is not set (call it through a roberta_*.sh script)" >&2; exit 2
  fi
done

smoke=0
passed=()
for a in "$@"; do
  if [ "$a" = --smoke ]; then smoke=1; else passed+=("$a"); fi
done
set -- ${passed[@]+"${passed[@]}"}
if [ "$smoke" = 1 ]; then
  SMOKE_DIR="${SMOKE_DIR:-$NLU_DIR/smoke_out}"
  case "$SMOKE_DIR" in /*) ;; *) SMOKE_DIR="$PWD/$SMOKE_DIR" ;; esac
  if [ ! -f "$SMOKE_DIR/.done" ]; then
    "$PYTHON" "$NLU_DIR/src/run_glue_smoke.py" "$SMOKE_DIR"
    touch "$SMOKE_DIR/.done"
  fi
  MODEL_CARD=roberta-tiny INIT_CHECKPOINT="" RANDOM_INIT=1 MNLI_ADAPTER=none num_gpus=1
  TOKENIZER_DIR="$SMOKE_DIR/tokenizer" DATA_DIR="$SMOKE_DIR/glue" EVAL_STRATEGY=end
  OUTPUT_DIR="$SMOKE_DIR/runs/roberta_${MODEL_SIZE}_${METHOD_NAME}/$TASK"
  MAX_STEPS="${SMOKE_STEPS:-20}" BATCH_SIZE=8 MAX_SEQ_LENGTH=64 MAX_TRAIN_SAMPLES="" MAX_EVAL_SAMPLES=""
  set -- "$@" --overwrite_output_dir --logging_steps 5 --no_tensorboard
  echo "== smoke: roberta-tiny (random weights), $MAX_STEPS steps on $DATA_DIR -> $OUTPUT_DIR"
fi

MODEL_CARD="${MODEL_CARD:-roberta-$MODEL_SIZE}"
INIT_CHECKPOINT="${INIT_CHECKPOINT-$NLU_DIR/pretrained_checkpoints/roberta-$MODEL_SIZE/pytorch_model.bin}"
TOKENIZER_DIR="${TOKENIZER_DIR:-$NLU_DIR/pretrained_checkpoints/roberta-$MODEL_SIZE}"
DATA_DIR="${DATA_DIR:-$NLU_DIR/data/glue}"
RUN_ROOT="$NLU_DIR/trained_models/roberta_${MODEL_SIZE}_${METHOD_NAME}"
OUTPUT_DIR="${OUTPUT_DIR:-$RUN_ROOT/$TASK/seed_$SEED}"
EVAL_STRATEGY="${EVAL_STRATEGY:-epoch}"
# What a real run reads, all checked at once (each missing one with its fix).
missing=()
if [ -n "$INIT_CHECKPOINT" ] && [ ! -f "$INIT_CHECKPOINT" ]; then
  missing+=("INIT_CHECKPOINT $INIT_CHECKPOINT: no such file (bash download_pretrained_checkpoints.sh --models nlu from the repository root; or INIT_CHECKPOINT= RANDOM_INIT=1 MODEL_CARD=roberta-tiny for a random model)")
fi
if ! { [ -f "$TOKENIZER_DIR/vocab.json" ] && [ -f "$TOKENIZER_DIR/merges.txt" ]; } \
    && ! { [ -f "$TOKENIZER_DIR/encoder.json" ] && [ -f "$TOKENIZER_DIR/vocab.bpe" ]; }; then
  missing+=("TOKENIZER_DIR $TOKENIZER_DIR: no vocab.json + merges.txt (download_pretrained_checkpoints.sh --models nlu)")
fi
if [ ! -d "$DATA_DIR" ]; then
  missing+=("DATA_DIR $DATA_DIR: no such folder (bash create_datasets.sh --tasks glue from the repository root)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "run_glue_task.sh: ${#missing[@]} input(s) missing:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  echo "  (--smoke runs this script offline on tiny generated data instead)" >&2
  exit 2
fi
if [ -z "${num_gpus:-}" ]; then
  num_gpus=$("$PYTHON" -c "import torch; print(max(1, torch.cuda.device_count()))" 2>/dev/null || echo 1)
fi

args=(--task_name "$TASK" --data_dir "$DATA_DIR" --tokenizer_dir "$TOKENIZER_DIR"
      --model_card "$MODEL_CARD" --max_seq_length "$MAX_SEQ_LENGTH"
      --per_device_train_batch_size "$BATCH_SIZE" --learning_rate "$LR"
      --num_train_epochs "$EPOCHS" --warmup_ratio "${WARMUP_RATIO:-0.06}"
      --weight_decay "${WEIGHT_DECAY:-0.1}" --seed "$SEED" --output_dir "$OUTPUT_DIR"
      --evaluation_strategy "$EVAL_STRATEGY" --do_train --do_eval "${precision_args[@]}")
[ -n "$INIT_CHECKPOINT" ] && args+=(--init_checkpoint "$INIT_CHECKPOINT")
[ -n "${CLS_LR:-}" ] && args+=(--classifier_lr "$CLS_LR")
[ -n "${MAX_STEPS:-}" ] && args+=(--max_steps "$MAX_STEPS")
[ -n "${MAX_TRAIN_SAMPLES:-}" ] && args+=(--max_train_samples "$MAX_TRAIN_SAMPLES")
[ -n "${MAX_EVAL_SAMPLES:-}" ] && args+=(--max_eval_samples "$MAX_EVAL_SAMPLES")
case "${RANDOM_INIT:-0}" in 1|true|True|yes) args+=(--random_init);; esac

if [ "${FROM_MNLI:-0}" = 1 ]; then
  MNLI_ADAPTER="${MNLI_ADAPTER:-$RUN_ROOT/mnli/seed_$SEED/pytorch_model.bin}"
  if [ "$MNLI_ADAPTER" != none ]; then
    if [ ! -f "$MNLI_ADAPTER" ]; then
      echo "run_glue_task.sh: $TASK starts from the MNLI adapter, but $MNLI_ADAPTER does not" \
           "exist: run roberta_${MODEL_SIZE}_${METHOD_NAME}_mnli.sh first, or set MNLI_ADAPTER" \
           "(a file, or 'none' to start from scratch)" >&2
      exit 2
    fi
    args+=(--adapter_checkpoint "$MNLI_ADAPTER")
  fi
fi

# METHOD_ARGS is a flag string written by make_scripts.py: split on spaces on purpose.
# shellcheck disable=SC2206
method_args=($METHOD_ARGS)
mkdir -p "$OUTPUT_DIR"
echo "== roberta-$MODEL_SIZE $METHOD_NAME $TASK -> $OUTPUT_DIR ($num_gpus process(es))"
export PYTHONHASHSEED=0
export CUBLAS_WORKSPACE_CONFIG="${CUBLAS_WORKSPACE_CONFIG-:16:8}"
if [ "$num_gpus" -gt 1 ]; then
  "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$num_gpus" \
    "$NLU_DIR/src/run_glue.py" "${args[@]}" "${method_args[@]}" "$@"
else
  "$PYTHON" "$NLU_DIR/src/run_glue.py" "${args[@]}" "${method_args[@]}" "$@"
fi
