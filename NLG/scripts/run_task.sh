#!/usr/bin/env bash
# One NLG experiment end to end: train (gpt2_ft.py) -> beam search (gpt2_beam.py) ->
# decode (gpt2_decode.py) -> score (eval/score.py). Called by the <task>_<method>.sh scripts,
# which only set the hyperparameters (as environment variables) and pass their arguments on.
#
#   bash scripts/e2e_lora.sh [--num_gpus N] [--seed S] [--model_card gpt2.sm|gpt2.md|gpt2.lg|card.json]
#        [--init_checkpoint FILE|random] [--work_dir DIR] [--data_dir DIR] [--vocab DIR] [--max_step N]
#        [--launcher auto|torchrun|launch|python] [--force] [--smoke] [--backbone gpt2|hf:ID|DIR|FILE.gguf]
#
# --backbone hf:<hub id | folder | file.gguf> (or BACKBONE=...): a Hugging Face causal LM instead
#   of GPT-2, e.g. hf:pretrained_checkpoints/SmolLM2-135M-Instruct. The task's *_formatted.jsonl
#   are encoded with its tokenizer into WORK_DIR/data; it trains in float32 (PRECISION=bf16:
#   autocast), the method on q_proj, v_proj (EXTRA_FT_ARGS="--adapt_targets ..." names other
#   projections); the beam search takes the model and method from the checkpoint alone and ends
#   at the tokenizer's end id and at its "\n\n" token where it has one; decoding detokenizes with
#   it. --model_card, --init_checkpoint and --vocab are GPT-2's and not used with it.
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
#              MAX_STEP LAUNCHER FORCE SMOKE SMOKE_DIR PYTHON BACKBONE
#   training:  LR WEIGHT_DECAY LABEL_SMOOTH WARMUP_STEP MAX_EPOCH TRAIN_BATCH_SIZE VALID_BATCH_SIZE
#              GRAD_ACC SEQ_LEN CLIP ADAM_BETA2 SCHEDULER SAVE_INTERVAL METHOD_ARGS
#              EXTRA_FT_ARGS (flags appended to gpt2_ft.py)
#   decoding:  BEAM LENGTH_PENALTY NO_REPEAT_NGRAM_SIZE REPETITION_PENALTY EVAL_LEN
#              BEAM_BATCH_SIZE (gpt2_beam.py --batch_size; the reference's 1 by default)
#              EOS_TOKEN_ID (an extra end id; default the vocabulary's or tokenizer's "\n\n")
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
BACKBONE=${BACKBONE:-gpt2}

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
    --backbone) BACKBONE=$2; shift 2 ;;
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
case "$BACKBONE" in
  gpt2) hf=0 ;;
  hf:?*) hf=1
     [ "$SMOKE" != 1 ] || die "--smoke runs a tiny random GPT-2; --backbone $BACKBONE needs the task's data (--data_dir)"
     # a local folder or file given relative to where the user stands (a hub id stays as it is)
     if [ -e "${BACKBONE#hf:}" ]; then BACKBONE=hf:$(abspath "${BACKBONE#hf:}"); fi ;;
  *) die "--backbone must be gpt2 or hf:<hub id | folder | file.gguf>, got '$BACKBONE'" ;;
esac
[ "$SMOKE" != 1 ] || smoke_setup
[ -z "$INIT_CHECKPOINT" ] || [ "$INIT_CHECKPOINT" = random ] || INIT_CHECKPOINT=$(abspath "$INIT_CHECKPOINT")
[ -z "$WORK_DIR" ] || WORK_DIR=$(abspath "$WORK_DIR")
[ -z "$DATA_DIR" ] || DATA_DIR=$(abspath "$DATA_DIR")
VOCAB=$(abspath "$VOCAB")
case "$MODEL_CARD" in gpt2.*) ;; *) MODEL_CARD=$(abspath "$MODEL_CARD") ;; esac
cd "$nlg"

# data folder, reference layout, scored splits: the task table (src/tasks.py)
task_vars=$("$PYTHON" -m nlg.tasks shell "$TASK" 2>&1) || die "TASK '$TASK': ${task_vars#nlg.tasks: }"
eval "$task_vars"
DATA_DIR=${DATA_DIR:-$nlg/$TASK_DATA}

# GPT-2: the card's checkpoint, the token ids create_datasets.sh wrote, the card fitting the
# vocabulary, "\n\n" as an extra end id.
gpt2_setup() {
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
ids_dir=$DATA_DIR
init_inputs=()
[ "$INIT_CHECKPOINT" = random ] || init_inputs=("$INIT_CHECKPOINT")
model_args=(--model_card "$MODEL_CARD" "${init_args[@]}")
beam_model_args=(--model_card "$MODEL_CARD")
text_args=(--vocab "$VOCAB")
}

# A Hugging Face backbone: the formatted splits encoded with its tokenizer into WORK_DIR/data
# (again when they or the backbone change), "\n\n" as an extra end id where the tokenizer has
# it as one token; the beam search takes the model and method from the checkpoint alone.
hf_setup() {
local split stale hf_eos
[ -z "$INIT_CHECKPOINT" ] || die "--init_checkpoint is GPT-2's; --backbone $BACKBONE brings its own weights"
size=HF_$(basename "${BACKBONE#hf:}" .gguf | tr -c 'A-Za-z0-9._\n-' _)
WORK_DIR=${WORK_DIR:-$nlg/trained_models/$size/$TASK/${METHOD_NAME}_seed$SEED}
for split in train valid test; do
  [ -f "$DATA_DIR/${split}_formatted.jsonl" ] || die "$DATA_DIR/${split}_formatted.jsonl not found (bash create_datasets.sh, or --data_dir)"
done
mkdir -p "$WORK_DIR/data"
stale=()
for split in train valid test; do
  if [ "$FORCE" = 1 ] || [ ! -f "$WORK_DIR/data/$split.jsonl" ] || [ ! -f "$WORK_DIR/.stamp.encode_$split" ] \
      || stamp_differs "encode_$split" "$BACKBONE" -- "$DATA_DIR/${split}_formatted.jsonl"; then
    stale+=("$split")
  fi
done
[ ${#stale[@]} = 0 ] || say "encode ${stale[*]} with the tokenizer of $BACKBONE -> $WORK_DIR/data"
# one process for the splits and the end id (each start imports torch and transformers)
hf_eos=$("$PYTHON" - "$BACKBONE" "$DATA_DIR" "$WORK_DIR/data" "${stale[@]}" <<'PY'
import sys
from nlg.gpt2_encode import encode_file
from nlg.hf_tokenizer import HFTextCodec
try:
    codec = HFTextCodec.from_spec(sys.argv[1], "--backbone")
    for split in sys.argv[4:]:
        encode_file(codec, f"{sys.argv[2]}/{split}_formatted.jsonl", f"{sys.argv[3]}/{split}.jsonl",
                    add_bos=True, add_eos=True, progress=False)
except (ValueError, KeyError, OSError, ImportError) as e:
    sys.exit(str(e))
ids = codec.ids("\n\n")
print(ids[0] if len(ids) == 1 else "")
PY
) || die "encoding the data with the tokenizer of $BACKBONE failed"
for split in "${stale[@]}"; do
  write_stamp "encode_$split" "$BACKBONE" -- "$DATA_DIR/${split}_formatted.jsonl"
done
[ -n "${EOS_TOKEN_ID:-}" ] || EOS_TOKEN_ID=$hf_eos
ids_dir=$WORK_DIR/data
init_inputs=()
model_args=(--backbone "$BACKBONE")
beam_model_args=()
text_args=(--tokenizer "$BACKBONE")
}

if [ "$BACKBONE" = gpt2 ]; then gpt2_setup; else hf_setup; fi

case "${PRECISION:=fp32}" in
  fp32) precision_args=() ;;
  tf32) precision_args=(--tf32) ;;
  bf16) precision_args=(--bf16) ;;
  *) die "PRECISION must be fp32, tf32 or bf16, got '$PRECISION'" ;;
esac

mkdir -p "$WORK_DIR"
read -r -a method_args <<< "$METHOD_ARGS"
# A Hugging Face backbone's checkpoint records its method: the beam search takes it from there.
beam_method=("${method_args[@]}")
[ "$BACKBONE" = gpt2 ] || beam_method=()
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
  --train_data "$ids_dir/train.jsonl"
  --valid_data "$ids_dir/valid.jsonl"
  --train_batch_size "${TRAIN_BATCH_SIZE:-8}"
  --grad_acc "${GRAD_ACC:-1}"
  --valid_batch_size "${VALID_BATCH_SIZE:-4}"
  --seq_len "${SEQ_LEN:-512}"
  "${model_args[@]}"
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
ft_inputs=("$ids_dir/train.jsonl" "$ids_dir/valid.jsonl" "${init_inputs[@]}")
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
  --data "$ids_dir/test.jsonl"
  --batch_size "${BEAM_BATCH_SIZE:-1}"
  --seq_len "${SEQ_LEN:-512}"
  --eval_len "${EVAL_LEN:-64}"
  "${beam_model_args[@]}"
  --init_checkpoint "$ckpt"
  --platform local
  "${beam_method[@]}"
  --beam "$BEAM"
  --length_penalty "$LENGTH_PENALTY"
  --no_repeat_ngram_size "${NO_REPEAT_NGRAM_SIZE:-4}"
  --repetition_penalty "${REPETITION_PENALTY:-1.0}"
  ${EOS_TOKEN_ID:+--eos_token_id "$EOS_TOKEN_ID"}
  --work_dir "$WORK_DIR"
  --output_file "$predict"
  "${precision_args[@]}"
  "${extra_beam[@]}"
)
if [ "$FORCE" != 1 ] && [ -f "$WORK_DIR/$predict" ] \
    && ! stamp_differs beam "${beam_args[@]}" -- "$ids_dir/test.jsonl" "$ckpt"; then
  say "beam: reusing $WORK_DIR/$predict"
else
  say "beam search (beam $BEAM, length penalty $LENGTH_PENALTY) -> $predict"
  "${launch[@]}" src/gpt2_beam.py "${beam_args[@]}"
  write_stamp beam "${beam_args[@]}" -- "$ids_dir/test.jsonl" "$ckpt"
fi

# 3. Decode and 4. score. WebNLG is scored on the seen / unseen categories and on all of them.
REF_NUM=${REF_NUM:-$TASK_REF_NUM}
score_key=("$TASK" "${text_args[1]}" "$REF_NUM" "${NO_METEOR:-}")
if [ "$FORCE" != 1 ] && [ "$WORK_DIR/scores.json" -nt "$WORK_DIR/$predict" ] \
    && ! stamp_differs score "${score_key[@]}" -- "$WORK_DIR/$predict" "$DATA_DIR/test_formatted.jsonl"; then
  say "decode + score: reusing $WORK_DIR/scores.json (newer than $predict)"
elif [ "$TASK_REFERENCES" = e2e ]; then
  say "decode + score"
  "$PYTHON" src/gpt2_decode.py \
    "${text_args[@]}" \
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
      "${text_args[@]}" \
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
