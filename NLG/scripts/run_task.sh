#!/usr/bin/env bash
# One NLG experiment end to end: train (gpt2_ft.py) -> beam search (gpt2_beam.py) ->
# decode (gpt2_decode.py) -> score (eval/score.py). Called by the <task>_<method>.sh scripts,
# which only set the hyperparameters (as environment variables) and pass their arguments on.
#
#   bash scripts/e2e_lora.sh [--num_gpus N] [--seed S] [--model_card gpt2.sm|gpt2.md|gpt2.lg|card.json]
#        [--init_checkpoint FILE|random] [--work_dir DIR] [--data_dir DIR] [--vocab DIR] [--max_step N]
#        [--launcher auto|torchrun|launch|python] [--force] [--smoke]
#
# --smoke: the whole pipeline of this task script offline in about half a minute (21 CPU-seconds
#   on 2 cores, data building included; a busy machine takes longer): the demo's
#   generators write small splits in this task's raw format and a BPE vocabulary for them,
#   create_datasets.sh builds the data as for a real run, a tiny random GPT-2 (a card made for
#   that vocabulary) trains 20 steps (--max_step), then beam search, decoding and scoring run.
#   Everything goes to SMOKE_DIR (default NLG/smoke_out); the data is built once and reused.
# --init_checkpoint random trains from a random backbone (gpt2_ft.py --random_init).
# A step whose output exists is reused when its settings and inputs are unchanged (the log says
# so; changed ones stop with a message); --force (or FORCE=1) redoes them all.
#
# Environment (the calling script sets the hyperparameters; any can be overridden, LR=1e-4 bash ...):
#   options:   NUM_GPUS (or num_gpus) SEED MODEL_CARD INIT_CHECKPOINT WORK_DIR DATA_DIR VOCAB
#              MAX_STEP LAUNCHER FORCE SMOKE SMOKE_DIR PYTHON
#   training:  LR WEIGHT_DECAY LABEL_SMOOTH WARMUP_STEP MAX_EPOCH TRAIN_BATCH_SIZE VALID_BATCH_SIZE
#              GRAD_ACC SEQ_LEN CLIP ADAM_BETA2 SCHEDULER SAVE_INTERVAL METHOD_ARGS
#              EXTRA_FT_ARGS (flags appended to gpt2_ft.py)
#   decoding:  BEAM LENGTH_PENALTY NO_REPEAT_NGRAM_SIZE REPETITION_PENALTY EVAL_LEN
#              BEAM_BATCH_SIZE (gpt2_beam.py --batch_size; the reference's 1 by default)
#              EOS_TOKEN_ID (an extra end id; default the vocabulary's "\n\n")
#              EXTRA_BEAM_ARGS (flags appended to gpt2_beam.py)
#   scoring:   REF_NUM (references per context for WebNLG / DART) NO_METEOR (1: skip METEOR)
#   precision: PRECISION=fp32|tf32|bf16, for training and decoding (default fp32):
#              fp32  every product in float32, as the official runs (the published numbers);
#              tf32  float32 tensors, TF32 products on Ampere and newer GPUs (--tf32): faster
#                    matmuls, inputs rounded to a 10-bit mantissa (about 1e-3 relative);
#              bf16  bf16 autocast in training, the merged model cast to bf16 for decoding
#                    (--bf16): half the activation memory, an 8-bit mantissa (about 4e-3
#                    relative); scores may move by a few tenths of a point, so compare runs
#                    of one precision only. On a CPU tf32 changes nothing, bf16 is slow
#                    without AVX512-BF16 / AMX.
#   resuming: RUN_TASK_CALLER (set by the task script) names it in LORA_RESUME_COMMAND, the
#              command a Ctrl-C in training prints to continue: the same script, same arguments
#              (it resumes by itself).
# Run from the repository root or from NLG/.
set -euo pipefail

# One function, read completely before it runs: editing this file cannot change a running job.
main() {

die() { echo "run_task.sh: error: $*" >&2; exit 2; }
say() { echo "== [${TASK:-?}/${METHOD_NAME:-?}] $*"; }

# A stage is reused only when its settings and inputs are those it was made with: its stamp
# (WORK_DIR/.stamp.<stage>) holds the stage's arguments and each input's size and mtime.
stamp_text() {  # stamp_text ARGS... -- FILES...
  local files=0 a
  for a in "$@"; do
    if [ "$a" = -- ]; then files=1; continue; fi
    if [ "$files" = 1 ]; then stat -c '%n %s %Y' "$a" 2>/dev/null || echo "$a missing"
    else printf '%s\n' "$a"; fi
  done
}
write_stamp() { local stage=$1; shift; stamp_text "$@" > "$WORK_DIR/.stamp.$stage"; }
stamp_differs() {  # true when a stamp exists and differs (a stage from before stamps is kept)
  local stage=$1; shift
  [ -f "$WORK_DIR/.stamp.$stage" ] || return 1
  [ "$(stamp_text "$@")" != "$(cat "$WORK_DIR/.stamp.$stage")" ]
}


here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nlg=$(cd "$here/.." && pwd)

# --smoke: small data in this task's raw format, its vocabulary and a tiny card (built once in
# SMOKE_DIR), then tiny settings for every step (they override the calling script's).
smoke_setup() {
  local dir src task_dir eot
  dir=$(abspath "${SMOKE_DIR:-$nlg/smoke_out}")
  src=$dir/source
  if [ ! -f "$src/.done" ]; then
    say "smoke: demo splits in every task's raw format, a vocabulary for them -> $src"
    rm -rf "$src"
    "$PYTHON" "$nlg/demo/make_data.py" --out_dir "$src/demo" --seed 0 --n_train 80 --n_valid 8 \
      --n_test 10 --train_refs 2 --test_refs 3 --n_pretrain 100 --task_raw "$src/raw" > /dev/null \
      || die "smoke: demo/make_data.py failed"
    "$PYTHON" "$nlg/demo/build_vocab.py" "$src/demo/train.txt" "$src/demo/pretrain.txt" \
      --out_dir "$src/vocab" --vocab_size 400 > /dev/null || die "smoke: demo/build_vocab.py failed"
    touch "$src/.done"
  fi
  task_dir=$("$PYTHON" -c 'import sys, os; from nlg.tasks import get; print(os.path.basename(get(sys.argv[1]).data_dir))' "$TASK") \
    || die "smoke: unknown TASK '$TASK'"
  if [ ! -f "$dir/data/$task_dir/test_formatted.jsonl" ]; then
    say "smoke: building the $TASK data with create_datasets.sh"
    bash "$nlg/../create_datasets.sh" --from "$src/raw" --out "$dir/data" --vocab "$src/vocab" --tasks "$TASK" \
      > "$dir/create_datasets_$TASK.log" 2>&1 || { tail -n 20 "$dir/create_datasets_$TASK.log" >&2; die "smoke: create_datasets.sh failed"; }
  fi
  "$PYTHON" -c 'import json, sys; n = len(json.load(open(sys.argv[1], encoding="utf-8"))); json.dump({"vocab_size": n, "n_positions": 128, "n_ctx": 128, "n_embd": 32, "n_layer": 2, "n_head": 2}, open(sys.argv[2], "w"))' \
    "$src/vocab/encoder.json" "$dir/card.json"
  eot=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1], encoding="utf-8"))["<|endoftext|>"])' "$src/vocab/encoder.json")
  DATA_DIR=$dir/data/$task_dir VOCAB=$src/vocab MODEL_CARD=$dir/card.json INIT_CHECKPOINT=random
  WORK_DIR=${WORK_DIR:-$dir/runs/${TASK}_$METHOD_NAME}
  MAX_STEP=${MAX_STEP:-20} SAVE_INTERVAL=1000 WARMUP_STEP=2 MAX_EPOCH=1000
  TRAIN_BATCH_SIZE=8 VALID_BATCH_SIZE=8 SEQ_LEN=96 EVAL_LEN=24 BEAM=2 BEAM_BATCH_SIZE=16
  EOS_TOKEN_ID=$eot NO_METEOR=1 REF_NUM=3
  EXTRA_FT_ARGS="--log_interval 5 --eval_interval 1000 --no_tensorboard ${EXTRA_FT_ARGS:-}"
  say "smoke: data $DATA_DIR, card $MODEL_CARD (random weights), $MAX_STEP steps -> $WORK_DIR"
}

# Ctrl-C in training names this command to continue (traincore/cli.py): the calling task
# script (make_scripts.py exports RUN_TASK_CALLER) with the same arguments resumes by itself.
LORA_RESUME_COMMAND="bash $(printf '%q' "${RUN_TASK_CALLER:-$0}")"
[ $# -eq 0 ] || LORA_RESUME_COMMAND+=" $(printf '%q ' "$@")"
export LORA_RESUME_COMMAND="${LORA_RESUME_COMMAND% }"

NUM_GPUS=${num_gpus:-${NUM_GPUS:-}}
SEED=${SEED:-110}
MODEL_CARD=${MODEL_CARD:-gpt2.md}
INIT_CHECKPOINT=${INIT_CHECKPOINT:-}
WORK_DIR=${WORK_DIR:-}
DATA_DIR=${DATA_DIR:-}
VOCAB=${VOCAB:-$nlg/vocab}
MAX_STEP=${MAX_STEP:-}
LAUNCHER=${LAUNCHER:-auto}
FORCE=${FORCE:-0}
SMOKE=${SMOKE:-0}
PYTHON=${PYTHON:-python}

while [ $# -gt 0 ]; do
  case "$1" in
    --num_gpus) NUM_GPUS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --model_card) MODEL_CARD=$2; shift 2 ;;
    --init_checkpoint) INIT_CHECKPOINT=$2; shift 2 ;;
    --work_dir) WORK_DIR=$2; shift 2 ;;
    --data_dir) DATA_DIR=$2; shift 2 ;;
    --vocab) VOCAB=$2; shift 2 ;;
    --max_step) MAX_STEP=$2; shift 2 ;;
    --launcher) LAUNCHER=$2; shift 2 ;;
    --force) FORCE=1; shift ;;
    --smoke) SMOKE=1; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

: "${TASK:?run_task.sh is called by a <task>_<method>.sh script that sets TASK}"
: "${METHOD_NAME:?set by the calling script}"
: "${METHOD_ARGS:=}"

if [ -z "$NUM_GPUS" ]; then
  NUM_GPUS=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
  [ "$NUM_GPUS" -ge 1 ] 2>/dev/null || NUM_GPUS=1
fi
case "$NUM_GPUS" in ''|*[!0-9]*) die "num_gpus must be a whole number, got '$NUM_GPUS'" ;; esac
[ "$NUM_GPUS" -ge 1 ] || NUM_GPUS=1
if [ "$LAUNCHER" = auto ]; then
  if [ "$NUM_GPUS" -gt 1 ]; then LAUNCHER=torchrun; else LAUNCHER=python; fi
fi
case "$LAUNCHER" in
  torchrun) launch=(torchrun --standalone --nproc_per_node="$NUM_GPUS") ;;
  launch) launch=("$PYTHON" -m torch.distributed.launch --nproc_per_node="$NUM_GPUS") ;;
  python) [ "$NUM_GPUS" -le 1 ] || die "--launcher python runs one process; use torchrun for $NUM_GPUS GPUs"
          launch=("$PYTHON") ;;
  *) die "--launcher must be auto, torchrun, launch or python" ;;
esac

# Paths given relative to where the user stands keep working after the cd into NLG/ below.
abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
[ "$SMOKE" != 1 ] || smoke_setup
[ -z "$INIT_CHECKPOINT" ] || [ "$INIT_CHECKPOINT" = random ] || INIT_CHECKPOINT=$(abspath "$INIT_CHECKPOINT")
[ -z "$WORK_DIR" ] || WORK_DIR=$(abspath "$WORK_DIR")
[ -z "$DATA_DIR" ] || DATA_DIR=$(abspath "$DATA_DIR")
VOCAB=$(abspath "$VOCAB")
case "$MODEL_CARD" in gpt2.*) ;; *) MODEL_CARD=$(abspath "$MODEL_CARD") ;; esac
cd "$nlg"

case "$MODEL_CARD" in
  gpt2.sm) size=S; ckpt_name=gpt2-pytorch_model.bin ;;
  gpt2.md) size=M; ckpt_name=gpt2-medium-pytorch_model.bin ;;
  gpt2.lg) size=L; ckpt_name=gpt2-large-pytorch_model.bin ;;
  gpt2.tiny) size=tiny; ckpt_name= ;;
  *) [ -f "$MODEL_CARD" ] || die "--model_card: '$MODEL_CARD' is neither gpt2.sm/md/lg nor a file"
     size=custom; ckpt_name= ;;
esac
if [ -z "$INIT_CHECKPOINT" ]; then
  [ -n "$ckpt_name" ] || die "--init_checkpoint is required with model card $MODEL_CARD (a file, or random)"
  INIT_CHECKPOINT=$nlg/pretrained_checkpoints/$ckpt_name
fi
# data folder, reference layout, scored splits: the task table (src/tasks.py)
task_vars=$("$PYTHON" -m nlg.tasks shell "$TASK" 2>&1) || die "TASK '$TASK': ${task_vars#nlg.tasks: }"
eval "$task_vars"
DATA_DIR=${DATA_DIR:-$nlg/$TASK_DATA}
WORK_DIR=${WORK_DIR:-$nlg/trained_models/GPT2_${size}/$TASK/${METHOD_NAME}_seed$SEED}

if [ "$INIT_CHECKPOINT" = random ]; then
  init_args=(--random_init)
else
  init_args=(--init_checkpoint "$INIT_CHECKPOINT")
fi
[ "$INIT_CHECKPOINT" = random ] || [ -f "$INIT_CHECKPOINT" ] || die "checkpoint not found: $INIT_CHECKPOINT (bash download_pretrained_checkpoints.sh, or --init_checkpoint)"
for f in train.jsonl valid.jsonl test.jsonl test_formatted.jsonl; do
  [ -f "$DATA_DIR/$f" ] || die "$DATA_DIR/$f not found (bash create_datasets.sh, or --data_dir)"
done
# The model card and the vocabulary must agree before minutes of training and decoding go by
# (a card for another vocabulary trains, then fails in decoding on an unknown token id).
for f in encoder.json; do
  [ -f "$VOCAB/$f" ] || die "$VOCAB/$f not found (--vocab DIR)"
done
card_check=$("$PYTHON" - "$MODEL_CARD" "$VOCAB/encoder.json" <<'PY' 2>&1
import json, sys
from nlg.model import config_from_card
try:
    card = config_from_card(sys.argv[1])
except ValueError as e:
    sys.exit(str(e))
n = len(json.load(open(sys.argv[2], encoding="utf-8")))
if n != card.vocab_size:
    sys.exit(f"--model_card {sys.argv[1]} has vocab_size {card.vocab_size} but {sys.argv[2]} "
             f"holds {n} tokens: give the card made for this vocabulary (or the --vocab of "
             f"this card)")
PY
) || die "$card_check"
for f in encoder.json vocab.bpe; do
  [ -f "$VOCAB/$f" ] || die "$VOCAB/$f not found (--vocab DIR)"
done

# "\n\n" ends a generation in GPT-2's vocabulary (id 628, as in the reference scripts); a vocabulary
# without that token stops at <|endoftext|> only.
if [ -z "${EOS_TOKEN_ID:-}" ]; then
  EOS_TOKEN_ID=$("$PYTHON" -c 'import json,sys; e=json.load(open(sys.argv[1], encoding="utf-8")); print(e.get("\u010a\u010a", e["<|endoftext|>"]))' "$VOCAB/encoder.json") \
    || die "cannot read the end-of-text token from $VOCAB/encoder.json"
fi

case "${PRECISION:=fp32}" in
  fp32) precision_args=() ;;
  tf32) precision_args=(--tf32) ;;
  bf16) precision_args=(--bf16) ;;
  *) die "PRECISION must be fp32, tf32 or bf16, got '$PRECISION'" ;;
esac

mkdir -p "$WORK_DIR"
read -r -a method_args <<< "$METHOD_ARGS"
read -r -a extra_ft <<< "${EXTRA_FT_ARGS:-}"
read -r -a extra_beam <<< "${EXTRA_BEAM_ARGS:-}"
step_args=()
[ -z "$MAX_STEP" ] || step_args=(--max_step "$MAX_STEP")

# 1. Train: reuse a finished run, continue an interrupted one from its resumable state
# (resume.pt), start afresh with --force (gpt2_ft.py --overwrite clears the old run's files).
resume_args=()
if [ "$FORCE" = 1 ]; then
  resume_args=(--overwrite)
elif [ -f "$WORK_DIR/resume.pt" ] && [ ! -f "$WORK_DIR/run_info.json" ]; then
  resume_args=(--resume)
fi
ft_args=(
  --train_data "$DATA_DIR/train.jsonl"
  --valid_data "$DATA_DIR/valid.jsonl"
  --train_batch_size "${TRAIN_BATCH_SIZE:-8}"
  --grad_acc "${GRAD_ACC:-1}"
  --valid_batch_size "${VALID_BATCH_SIZE:-4}"
  --seq_len "${SEQ_LEN:-512}"
  --model_card "$MODEL_CARD"
  "${init_args[@]}"
  --platform local
  --clip "${CLIP:-0.0}"
  --lr "$LR"
  --weight_decay "$WEIGHT_DECAY"
  --correct_bias
  --adam_beta2 "${ADAM_BETA2:-0.999}"
  --scheduler "${SCHEDULER:-linear}"
  --warmup_step "$WARMUP_STEP"
  --max_epoch "$MAX_EPOCH"
  "${step_args[@]}"
  --save_interval "${SAVE_INTERVAL:-1000}"
  --label_smooth "$LABEL_SMOOTH"
  "${method_args[@]}"
  --work_dir "$WORK_DIR"
  --random_seed "$SEED"
  "${precision_args[@]}"
  "${extra_ft[@]}"
)
ft_inputs=("$DATA_DIR/train.jsonl" "$DATA_DIR/valid.jsonl")
[ "$INIT_CHECKPOINT" = random ] || ft_inputs+=("$INIT_CHECKPOINT")
if [ "$FORCE" != 1 ] && [ -f "$WORK_DIR/run_info.json" ]; then
  if stamp_differs train "${ft_args[@]}" -- "${ft_inputs[@]}"; then
    die "the settings or inputs changed since the finished training in $WORK_DIR: --force redoes it (or give another --work_dir)"
  fi
  say "train: reusing $WORK_DIR/run_info.json"
else
  if [ "${resume_args[*]}" = --resume ]; then say "train: continuing the interrupted run in $WORK_DIR"; fi
  say "train ($LAUNCHER, $NUM_GPUS process(es)) -> $WORK_DIR"
  "${launch[@]}" src/gpt2_ft.py "${ft_args[@]}" "${resume_args[@]}" --task "$TASK"
  write_stamp train "${ft_args[@]}" -- "${ft_inputs[@]}"
fi
ckpt=$("$PYTHON" -c '
import json, os, sys
info = json.load(open(sys.argv[1]))
for k in ("final_checkpoint", "checkpoint", "adapter_checkpoint"):
    if info.get(k):
        p = info[k]
        print(p if os.path.isabs(p) or os.path.isfile(p) else os.path.join(os.path.dirname(sys.argv[1]), p))
        break
else:
    sys.exit(sys.argv[1] + ": no final checkpoint path in it")' "$WORK_DIR/run_info.json")
[ -f "$ckpt" ] || die "final checkpoint $ckpt (from $WORK_DIR/run_info.json) not found"
step=$(basename "$ckpt" | sed -n 's/^model\.\([0-9]*\)\.pt$/\1/p')
step=${step:-final}

# 2. Beam search.
BEAM=${BEAM:-10}
lp_tag=$(echo "$LENGTH_PENALTY" | tr -d .)
predict=predict.$step.b${BEAM}p${lp_tag}r${NO_REPEAT_NGRAM_SIZE:-4}.jsonl
beam_args=(
  --data "$DATA_DIR/test.jsonl"
  --batch_size "${BEAM_BATCH_SIZE:-1}"
  --seq_len "${SEQ_LEN:-512}"
  --eval_len "${EVAL_LEN:-64}"
  --model_card "$MODEL_CARD"
  --init_checkpoint "$ckpt"
  --platform local
  "${method_args[@]}"
  --beam "$BEAM"
  --length_penalty "$LENGTH_PENALTY"
  --no_repeat_ngram_size "${NO_REPEAT_NGRAM_SIZE:-4}"
  --repetition_penalty "${REPETITION_PENALTY:-1.0}"
  --eos_token_id "$EOS_TOKEN_ID"
  --work_dir "$WORK_DIR"
  --output_file "$predict"
  "${precision_args[@]}"
  "${extra_beam[@]}"
)
if [ "$FORCE" != 1 ] && [ -f "$WORK_DIR/$predict" ] \
    && ! stamp_differs beam "${beam_args[@]}" -- "$DATA_DIR/test.jsonl" "$ckpt"; then
  say "beam: reusing $WORK_DIR/$predict"
else
  say "beam search (beam $BEAM, length penalty $LENGTH_PENALTY) -> $predict"
  "${launch[@]}" src/gpt2_beam.py "${beam_args[@]}"
  write_stamp beam "${beam_args[@]}" -- "$DATA_DIR/test.jsonl" "$ckpt"
fi

# 3. Decode and 4. score. WebNLG is scored on the seen / unseen categories and on all of them.
REF_NUM=${REF_NUM:-$TASK_REF_NUM}
score_key=("$TASK" "$VOCAB" "$REF_NUM" "${NO_METEOR:-}")
if [ "$FORCE" != 1 ] && [ "$WORK_DIR/scores.json" -nt "$WORK_DIR/$predict" ] \
    && ! stamp_differs score "${score_key[@]}" -- "$WORK_DIR/$predict" "$DATA_DIR/test_formatted.jsonl"; then
  say "decode + score: reusing $WORK_DIR/scores.json (newer than $predict)"
elif [ "$TASK_REFERENCES" = e2e ]; then
  say "decode + score"
  "$PYTHON" src/gpt2_decode.py \
    --vocab "$VOCAB" \
    --sample_file "$WORK_DIR/$predict" \
    --input_file "$DATA_DIR/test_formatted.jsonl" \
    --output_ref_file "$WORK_DIR/e2e_ref.txt" \
    --output_pred_file "$WORK_DIR/e2e_pred.txt"
  "$PYTHON" eval/score.py --task e2e --ref "$WORK_DIR/e2e_ref.txt" --hyp "$WORK_DIR/e2e_pred.txt" \
    --json "$WORK_DIR/scores.json" ${NO_METEOR:+--no-meteor}
else
  for split in $TASK_SCORE_SPLITS; do
    say "decode + score ($split)"
    out=$WORK_DIR/eval_$split
    mkdir -p "$out"
    "$PYTHON" src/gpt2_decode.py \
      --vocab "$VOCAB" \
      --sample_file "$WORK_DIR/$predict" \
      --input_file "$DATA_DIR/test_formatted.jsonl" \
      --ref_type "$TASK" \
      --ref_num "$REF_NUM" \
      --output_ref_file "$out/references" \
      --output_pred_file "$out/hypothesis" \
      --tokenize --lower \
      --filter "$split"
    if [ ! -s "$out/hypothesis" ]; then say "no $split examples in this test set: not scored"; continue; fi
    "$PYTHON" eval/score.py --task "$TASK" --ref "$out/references/reference" --hyp "$out/hypothesis" \
      --nr "$REF_NUM" --json "$out/scores.json" ${NO_METEOR:+--no-meteor}
  done
  cp "$WORK_DIR/eval_all/scores.json" "$WORK_DIR/scores.json"
fi
write_stamp score "${score_key[@]}" -- "$WORK_DIR/$predict" "$DATA_DIR/test_formatted.jsonl"
say "done: scores in $WORK_DIR/scores.json"
}

main "$@"
