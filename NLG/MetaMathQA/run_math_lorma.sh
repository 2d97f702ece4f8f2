#!/usr/bin/env bash
# LoRMA's math reasoning run: fine-tune a causal LM on MetaMathQA with LoRMA, merge, save, then
# evaluate greedily on GSM8K and MATH (Exploration-Lab/LoRMA NLG/MetaMathQA/run_math_lorma.sh).
#
#   ./run_math_lorma.sh R SEED MODE RI        e.g. ./run_math_lorma.sh 8 42 pre rri
#     R rank; SEED (as the official script, it only names the output folder: training runs with
#     the Trainer's seed 42; PASS_SEED=1 passes it); MODE pre|post; RI rri (LoRMA_+) | shift
#     (LoRMA_pi) | none
#
# Environment overrides, all optional (defaults as the official script):
#   MODEL_PATH   hub id or local folder         (meta-llama/Meta-Llama-3-8B)
#   DATA_PATH    training rows                  (./data/train/MetaMathQA-40K.json)
#   GSM8K_TEST   GSM8K test file                (../MetaMath/data/test/GSM8K_test.jsonl)
#   MATH_TEST    MATH test file                 (../MetaMath/data/test/MATH_test.jsonl)
#   SAVE_PATH    output folder                  (./Llama3_8B_metamath40k_lorma_<R>_<MODE>_<RI>_lr_5e_m4_seed_<SEED>)
#   num_gpus     processes (>1: data-parallel with torchrun)   (1)
#   PRECISION    bf16 (bf16 autocast, as the official run) | tf32 (fp32 weights and math, TF32
#                matmuls: Ampere+ GPUs) | fp32 (everything float32)   (bf16)
#   TORCH_DTYPE  the base model's weights: float32 (official) | bfloat16 | float16 | auto (float32)
#   ACCELERATE_CONFIG  launch with `accelerate launch --config_file` (FSDP: ./fsdp.yaml) and
#                num_gpus processes instead of torchrun
#   EXTRA_ARGS   appended to the training command, e.g. "--max_steps 2 --model_max_length 128"
#   EVAL_ARGS    appended to both evaluations, e.g. "--max_tokens 64 --end 100"
#   SKIP_EVAL=1  train only; PASS_SEED=1 pass SEED to training; PYTHON (python3)
set -euo pipefail

usage() { echo "usage: $0 R SEED MODE(pre|post) RI(rri|shift|none)   (--help for the options)" >&2; exit 2; }
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,24p' "$0"; exit 0; fi
[ $# -eq 4 ] || usage
lorma_r=$1; seed=$2; lorma_mode=$3; rank_inflation=$4
case "$lorma_r" in ''|*[!0-9]*) echo "$0: R must be a positive integer, got '$lorma_r'" >&2; exit 2;; esac
case "$seed" in ''|*[!0-9]*) echo "$0: SEED must be a non-negative integer, got '$seed'" >&2; exit 2;; esac
case "$lorma_mode" in pre|post) ;; *) echo "$0: MODE must be pre or post, got '$lorma_mode'" >&2; exit 2;; esac
case "$rank_inflation" in rri|shift|none) ;; *) echo "$0: RI must be rri, shift or none, got '$rank_inflation'" >&2; exit 2;; esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python3}
MODEL_PATH=${MODEL_PATH:-meta-llama/Meta-Llama-3-8B}
DATA_PATH=${DATA_PATH:-./data/train/MetaMathQA-40K.json}
GSM8K_TEST=${GSM8K_TEST:-../MetaMath/data/test/GSM8K_test.jsonl}
MATH_TEST=${MATH_TEST:-../MetaMath/data/test/MATH_test.jsonl}
SAVE_PATH=${SAVE_PATH:-./Llama3_8B_metamath40k_lorma_${lorma_r}_${lorma_mode}_${rank_inflation}_lr_5e_m4_seed_${seed}}
num_gpus=${num_gpus:-1}
case "$num_gpus" in ''|*[!0-9]*|0) echo "$0: num_gpus must be a positive integer, got '$num_gpus'" >&2; exit 2;; esac
PRECISION=${PRECISION:-bf16}
case "$PRECISION" in
  bf16) precision_args=(--bf16 True) ;;
  tf32) precision_args=(--bf16 False --tf32 True) ;;
  fp32) precision_args=(--bf16 False) ;;
  *) echo "$0: PRECISION must be bf16, tf32 or fp32, got '$PRECISION'" >&2; exit 2 ;;
esac
TORCH_DTYPE=${TORCH_DTYPE:-float32}
case "$TORCH_DTYPE" in float32|bfloat16|float16|auto) ;;
  *) echo "$0: TORCH_DTYPE must be float32, bfloat16, float16 or auto, got '$TORCH_DTYPE'" >&2; exit 2 ;;
esac
[ -f "$DATA_PATH" ] || { echo "$0: training data $DATA_PATH not found (set DATA_PATH; README: LLM pipeline)" >&2; exit 2; }

seed_args=()
if [ "${PASS_SEED:-0}" = 1 ]; then seed_args=(--seed "$seed")
else echo "note: as the official script, SEED=$seed only names $SAVE_PATH; training uses seed 42 (PASS_SEED=1 passes it)"; fi
if [ -n "${ACCELERATE_CONFIG:-}" ]; then
  [ -f "$ACCELERATE_CONFIG" ] || { echo "$0: ACCELERATE_CONFIG $ACCELERATE_CONFIG not found" >&2; exit 2; }
  launch=("$PYTHON" -m accelerate.commands.launch --config_file "$ACCELERATE_CONFIG" --num_processes "$num_gpus" --main_process_port "${MASTER_PORT:-1231}")
elif [ "$num_gpus" -gt 1 ]; then
  launch=("$PYTHON" -m torch.distributed.run --nproc_per_node="$num_gpus" --master_port="${MASTER_PORT:-1231}")
else
  launch=("$PYTHON")
fi
resume=()
# a killed run left a resumable state (none under FSDP, which saves the adapter at the end only)
compgen -G "$SAVE_PATH/trainer/checkpoint-*" >/dev/null && [ ! -f "$SAVE_PATH/config.json" ] && resume=(--resume)

# shellcheck disable=SC2086  # EXTRA_ARGS / EVAL_ARGS are word lists
"${launch[@]}" "$here/train_math_lorma.py" \
    --model_name_or_path "$MODEL_PATH" \
    --data_path "$DATA_PATH" \
    --data_length 10000000 \
    "${precision_args[@]}" \
    --torch_dtype "$TORCH_DTYPE" \
    --output_dir "$SAVE_PATH" \
    --per_device_train_batch_size 2 \
    --per_device_eval_batch_size 2 \
    --gradient_accumulation_steps 32 \
    --evaluation_strategy "no" \
    --save_strategy "no" \
    --save_total_limit 2 \
    --learning_rate 5e-4 \
    --weight_decay 0. \
    --warmup_ratio 0.1 \
    --lr_scheduler_type "cosine" \
    --logging_steps 1 \
    --num_train_epochs 2 \
    --lorma_r "$lorma_r" \
    --lorma_alpha $((lorma_r * 2)) \
    --lorma_mode "$lorma_mode" \
    --rank_inflation "$rank_inflation" \
    --target_modules up_proj down_proj o_proj gate_proj \
    "${seed_args[@]}" "${resume[@]}" ${EXTRA_ARGS:-}

[ "${SKIP_EVAL:-0}" = 1 ] && exit 0
echo "===================== EVAL"
"$PYTHON" "$here/eval_gsm8k.py" --model "$SAVE_PATH" --data_file "$GSM8K_TEST" ${EVAL_ARGS:-}
echo "====================="
"$PYTHON" "$here/eval_math.py" --model "$SAVE_PATH" --data_file "$MATH_TEST" ${EVAL_ARGS:-}
