#!/usr/bin/env bash
# The whole project on a laptop CPU, offline, in minutes:
#
#   bash NLG/scripts/demo.sh [--out DIR] [--size full|small] [--jobs N] [--force]
#
# 1. makes a small E2E-style data-to-text dataset (NLG/demo/make_data.py) and restaurant text of
#    the same domain for pretraining (with fact cards in a notation of its own, so the base learns
#    to copy from its context as a pretrained GPT-2 has; the MR format stays new to it);
# 2. builds a small byte-level BPE vocabulary in GPT-2's file format (NLG/demo/build_vocab.py),
#    or uses DEMO_VOCAB_DIR (e.g. NLG/vocab, GPT-2's own) when set;
# 3. pretrains a tiny GPT-2 with the project's own trainer (gpt2_ft.py, full fine-tuning) and
#    saves it in the published GPT-2 layout (gpt2_ft.py --export_published);
# 4. fine-tunes it with every method through the task scripts a real run uses
#    (scripts/e2e_<method>.sh: gpt2_ft -> gpt2_beam -> gpt2_decode -> eval/score.py), and decodes
#    the un-adapted base model as a baseline;
# 5. prints one table with the command that turns any finished runs into tables
#    (python -m nlg.report: trainable parameters, adapter size, training CPU time and peak
#    memory, the E2E metrics; every row decoded with the same settings), written as markdown and
#    CSV, and draws the training and validation losses in one PNG (a second panel for the
#    adapters alone).
#    Each run's log in OUT/logs/ keeps every earlier run's lines.
#
# Environment: DEMO_OUT (output folder, default NLG/demo_out/<size>), DEMO_SIZE (full = the
# documented demo, small = the test-suite configuration), DEMO_JOBS (runs in parallel, default:
# one per CPU core, at most 2), DEMO_LAUNCHER (python or torchrun for the task scripts' steps),
# DEMO_VOCAB_DIR, DEMO_SEED, PYTHON. Every finished stage leaves its output behind and is reused
# on the next run with the same settings (the log says so); --force starts over.
set -euo pipefail

# The whole script is one function, read completely before it runs: editing this file while a
# demo runs cannot change the running one.
main() {

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nlg=$(cd "$here/.." && pwd)

die() { echo "demo.sh: error: $*" >&2; exit 1; }
log() { printf '[demo %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

SIZE=${DEMO_SIZE:-full}
OUT=${DEMO_OUT:-}
JOBS=${DEMO_JOBS:-}
FORCE=0
SEED=${DEMO_SEED:-0}
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

# --- prerequisites: fail before doing anything, with the fix in the message ----------------------
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif command -v python3 >/dev/null 2>&1; then PY=python3
else PY=python; fi
command -v "$PY" >/dev/null 2>&1 || die "Python 3 not found (looked for '$PY'); install Python >= 3.9"
pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
  || die "'$PY' does not run; install Python >= 3.9 or set PYTHON=/path/to/python3"
case "$pyver" in
  2.*|3.[0-8]) die "Python $pyver is too old ('$PY'); the project needs Python >= 3.9 (set PYTHON=/path/to/python3)" ;;
esac
missing=$("$PY" - <<'PYEOF' 2>/dev/null
import importlib.util
print(" ".join(m for m in ("torch", "numpy", "tqdm") if importlib.util.find_spec(m) is None))
PYEOF
) || die "'$PY' cannot check its packages"
if [ -n "$missing" ]; then
  die "missing Python package(s) for $PY: $missing. Install them first: pip install -r requirement.txt
  (CPU-only PyTorch: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
fi
"$PY" -c 'import torch' 2>/dev/null || die "'import torch' fails for $PY: reinstall PyTorch (pip install -r requirement.txt)"
# The table comes from `python -m nlg.report`, which needs the project installed (NLG/src is the
# package nlg); the other steps run as files.
"$PY" -c 'import nlg.report' 2>/dev/null || die "'import nlg.report' fails for $PY: install the project first (pip install -e . from the repository root)"
for f in src/gpt2_ft.py src/gpt2_beam.py src/gpt2_decode.py src/gpt2_encode.py src/format_converting_e2e.py \
         src/report.py eval/score.py demo/make_data.py demo/build_vocab.py; do
  [ -f "$nlg/$f" ] || die "NLG/$f is missing: this checkout is incomplete"
done

case "$SIZE" in
  full)  # the documented demo: < 10 min on 2 CPU cores
    N_TRAIN=600 N_VALID=40 N_TEST=60 TRAIN_REFS=3 TEST_REFS=5 N_PRETRAIN=4000 VOCAB_SIZE=1024
    N_LAYER=3 N_EMBD=96 N_HEAD=4 N_POS=128 SEQ=96
    PRE_STEPS=600 PRE_BATCH=32 PRE_LR=0.003 FT_STEPS=600 FT_BATCH=16 WARMUP=60
    BEAM=5 EVAL_LEN=48 NOLA_BASIS=256 TB_ARGS="" NO_METEOR="" LENGTH_PENALTY=0.9 ;;
  small)  # the test-suite configuration: same stages, everything tiny
    N_TRAIN=80 N_VALID=8 N_TEST=10 TRAIN_REFS=2 TEST_REFS=3 N_PRETRAIN=400 VOCAB_SIZE=400
    N_LAYER=2 N_EMBD=32 N_HEAD=2 N_POS=96 SEQ=80
    PRE_STEPS=30 PRE_BATCH=16 PRE_LR=0.003 FT_STEPS=15 FT_BATCH=8 WARMUP=3
    # TensorBoard's import and METEOR's Java start-up cost seconds per run: skipped here
    BEAM=2 EVAL_LEN=24 NOLA_BASIS=32 TB_ARGS="--no_tensorboard" NO_METEOR=1 LENGTH_PENALTY=0.9 ;;
  *) die "--size must be full or small, got '$SIZE'" ;;
esac
OUT=${OUT:-$nlg/demo_out/$SIZE}
case "$OUT" in /*) ;; *) OUT=$PWD/$OUT ;; esac
if [ -z "$JOBS" ]; then
  cores=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
  JOBS=$(( cores >= 2 ? 2 : 1 ))
fi
# One thread per process: these matrices are too small for intra-op threads to pay, and threads
# that wait on each other lose much more when other work shares the cores; the cores go to
# parallel runs instead.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export NO_METEOR   # read by run_task.sh's score step
[ "$FORCE" = 1 ] && [ -d "$OUT" ] && { log "--force: removing $OUT"; rm -rf "$OUT"; }
# Reuse is only sound for the same settings: a folder built with others is refused, not mixed.
config="size=$SIZE seed=$SEED vocab=${DEMO_VOCAB_DIR:-built}"
if [ -f "$OUT/demo_config.txt" ] && [ "$(cat "$OUT/demo_config.txt")" != "$config" ]; then
  die "$OUT holds a demo built with other settings ($(cat "$OUT/demo_config.txt")); use --force to rebuild it, or --out DIR"
fi
mkdir -p "$OUT/logs"
echo "$config" > "$OUT/demo_config.txt"
cd "$nlg"
t_start=$SECONDS
log "size=$SIZE out=$OUT jobs=$JOBS python=$PY ($pyver)"

# stage NAME OUTPUT CMD...: run CMD unless OUTPUT exists (from an earlier run).
stage() {
  local name=$1 output=$2 t0=$SECONDS; shift 2
  if [ -e "$output" ]; then log "$name: reusing ${output#$OUT/}"; return 0; fi
  log "$name ..."
  "$@"
  log "$name: done in $((SECONDS - t0)) s"
}

# eta ELAPSED DONE TOTAL: "ETA 1m05s" from the rate so far.
eta() {
  local left=$(( $1 * ($3 - $2) / ($2 > 0 ? $2 : 1) ))
  if (( left >= 60 )); then printf 'ETA %dm%02ds' $((left / 60)) $((left % 60)); else printf 'ETA %ds' "$left"; fi
}

# run_watched LABEL WORK_DIR TOTAL_STEPS LOG CMD...: run CMD (output appended to LOG, after a line
# naming this run: a re-run keeps the earlier runs' logs) and, while it runs, print the training
# progress it writes to WORK_DIR/train_log.jsonl every ~15 s, with an ETA.
run_watched() {
  local label=$1 work=$2 total=$3 logf=$4 pid last="" line step loss t0=$SECONDS
  shift 4
  printf '=== demo.sh run of %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" >> "$logf"
  "$@" >> "$logf" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do kill -0 "$pid" 2>/dev/null && sleep 1; done
    line=$(tail -n 1 "$work/train_log.jsonl" 2>/dev/null || true)
    step=$(echo "$line" | sed -n 's/.*"step": *\([0-9]*\).*/\1/p')
    loss=$(echo "$line" | sed -n 's/.*"loss": *\([0-9.]*\).*/\1/p')
    if [ -n "$step" ] && [ "$step" != "$last" ] && kill -0 "$pid" 2>/dev/null; then
      log "$label: step $step/$total ($((100 * step / total))%), loss ${loss:0:6}, $((SECONDS - t0)) s, $(eta $((SECONDS - t0)) "$step" "$total")"
      last=$step
    fi
  done
  wait "$pid"
}

# --- 1. data ---------------------------------------------------------------------------------------
RAW=$OUT/data/raw
DATA=$OUT/data/e2e
mkdir -p "$RAW" "$DATA"
make_data() {
  "$PY" "$nlg/demo/make_data.py" --out_dir "$RAW" --seed "$SEED" --n_train "$N_TRAIN" --n_valid "$N_VALID" \
    --n_test "$N_TEST" --train_refs "$TRAIN_REFS" --test_refs "$TEST_REFS" --n_pretrain "$N_PRETRAIN"
  touch "$RAW/.done"
}
stage "data: E2E-style MR||REF splits + pretraining text" "$RAW/.done" make_data

# --- 2. vocabulary ---------------------------------------------------------------------------------
if [ -n "${DEMO_VOCAB_DIR:-}" ]; then
  VOCAB=$(cd "$DEMO_VOCAB_DIR" && pwd)
  [ -f "$VOCAB/encoder.json" ] && [ -f "$VOCAB/vocab.bpe" ] || die "DEMO_VOCAB_DIR=$VOCAB lacks encoder.json / vocab.bpe"
  log "vocabulary: using $VOCAB"
else
  VOCAB=$OUT/vocab
  stage "vocabulary: byte-level BPE in GPT-2 format" "$VOCAB/vocab.bpe" \
    "$PY" "$nlg/demo/build_vocab.py" "$RAW/train.txt" "$RAW/pretrain.txt" --out_dir "$VOCAB" --vocab_size "$VOCAB_SIZE"
fi

# --- 3. format + encode (the project's converter and encoder) --------------------------------------
for split in train valid test; do
  stage "format $split" "$DATA/${split}_formatted.jsonl" \
    "$PY" src/format_converting_e2e.py "$RAW/$split.txt" "$DATA/${split}_formatted.jsonl"
  stage "encode $split" "$DATA/$split.jsonl" \
    "$PY" src/gpt2_encode.py --vocab "$VOCAB" --input "$DATA/${split}_formatted.jsonl" \
      --output "$DATA/$split.jsonl" --add_bos --add_eos
done
PRE=$OUT/data/pretrain
mkdir -p "$PRE"
for split in train valid; do
  src_file=$RAW/pretrain_formatted.jsonl
  [ "$split" = valid ] && src_file=$RAW/pretrain_valid_formatted.jsonl
  stage "encode pretraining $split" "$PRE/$split.jsonl" \
    "$PY" src/gpt2_encode.py --vocab "$VOCAB" --input "$src_file" --output "$PRE/$split.jsonl" --add_bos --add_eos
done

# --- 4. tiny GPT-2 base, pretrained with the project's trainer --------------------------------------
CARD=$OUT/model_card.json
V=$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1], encoding="utf-8"))))' "$VOCAB/encoder.json")
EOT=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1], encoding="utf-8"))["<|endoftext|>"])' "$VOCAB/encoder.json")
cat > "$CARD.tmp" <<JSON
{"vocab_size": $V, "n_positions": $N_POS, "n_ctx": $N_POS, "n_embd": $N_EMBD, "n_layer": $N_LAYER, "n_head": $N_HEAD}
JSON
mv "$CARD.tmp" "$CARD"
BASE_DIR=$OUT/base
pretrain() {
  run_watched pretraining "$BASE_DIR" "$PRE_STEPS" "$OUT/logs/pretrain.log" "$PY" src/gpt2_ft.py \
    --train_data "$PRE/train.jsonl" --valid_data "$PRE/valid.jsonl" \
    --train_batch_size "$PRE_BATCH" --grad_acc 1 --valid_batch_size "$PRE_BATCH" --seq_len "$SEQ" \
    --model_card "$CARD" --random_init --platform local \
    --method full --clip 1.0 --lr "$PRE_LR" --weight_decay 0.01 --correct_bias --adam_beta2 0.999 \
    --scheduler linear --warmup_step $((PRE_STEPS / 10)) --max_epoch 1000 --max_step "$PRE_STEPS" \
    --save_interval "$PRE_STEPS" --eval_interval "$PRE_STEPS" --log_interval $((PRE_STEPS / 20 + 1)) \
    --label_smooth 0.0 --work_dir "$BASE_DIR" --random_seed "$SEED" --no_progress $TB_ARGS \
    --export_published "$BASE_DIR/pytorch_model.bin" \
    || { tail -n 30 "$OUT/logs/pretrain.log" >&2; die "pretraining failed (log: $OUT/logs/pretrain.log)"; }
}
stage "pretrain the tiny GPT-2 base ($N_LAYER layers, n_embd $N_EMBD, vocab $V, $PRE_STEPS steps)" \
  "$BASE_DIR/pytorch_model.bin" pretrain
BASE=$BASE_DIR/pytorch_model.bin

# --- 5. fine-tune every method with the real task scripts ------------------------------------------
# Every variant the loralib registry lists (a newly registered method joins by itself), but only
# MTLoRA's default structure (ICFM, what its official code ships): four structures would double
# the run time. DEMO_SKIP changes that.
DEMO_SKIP=${DEMO_SKIP:-"mtlora_shim mtlora_ctcm mtlora_dtsm"}
METHODS=()
for m in $(PYTHONPATH="$here/../..${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c 'import loralib; print(" ".join(loralib.script_variants()))') ft; do
  case " $DEMO_SKIP " in *" $m "*) ;; *) METHODS+=("$m") ;; esac
done
declare -A LABEL=([lora]="LoRA" [lorma_plus]="LoRMA_+" [lorma_pi]="LoRMA_pi" [mtlora_icfm]="MTLoRA (ICFM)"
                  [mtlora_shim]="MTLoRA (SHIM)" [mtlora_ctcm]="MTLoRA (CTCM)" [mtlora_dtsm]="MTLoRA (DTSM)"
                  [nola]="NOLA" [qnola]="NOLA (3-bit)" [ft]="full fine-tuning")
# Learning rates for a tiny model and a few hundred steps (the task scripts hold the papers' values);
# a method not named here gets LoRA's.
declare -A DEMO_LR=([nola]=0.1 [qnola]=0.1 [ft]=0.001)
for m in "${METHODS[@]}"; do
  : "${LABEL[$m]:=$m}"; : "${DEMO_LR[$m]:=0.01}"
done
declare -A DEMO_ENV=()

run_method() {
  local m=$1 work=$OUT/runs/$1 t0=$SECONDS
  mkdir -p "$work"
  if run_watched "${LABEL[$m]}" "$work" "$FT_STEPS" "$OUT/logs/$m.log" env ${DEMO_ENV[$m]:-} LR=${DEMO_LR[$m]} WARMUP_STEP=$WARMUP MAX_EPOCH=1000 MAX_STEP=$FT_STEPS TRAIN_BATCH_SIZE=$FT_BATCH \
     VALID_BATCH_SIZE=$FT_BATCH SEQ_LEN=$SEQ SAVE_INTERVAL=$FT_STEPS BEAM=$BEAM EVAL_LEN=$EVAL_LEN \
     BEAM_BATCH_SIZE=16 NOLA_NUM_BASIS=$NOLA_BASIS EOS_TOKEN_ID=$EOT PYTHON=$PY \
     LENGTH_PENALTY=$LENGTH_PENALTY \
     EXTRA_FT_ARGS="--log_interval $((FT_STEPS / 30 + 1)) --eval_interval $((FT_STEPS / 4)) --no_progress $TB_ARGS" \
     bash "$here/e2e_$m.sh" --data_dir "$DATA" --vocab "$VOCAB" --model_card "$CARD" \
       --init_checkpoint "$BASE" --work_dir "$work" --launcher "${DEMO_LAUNCHER:-python}" --num_gpus 1 --seed "$SEED"; then
    log "${LABEL[$m]}: finished in $((SECONDS - t0)) s"
  else
    log "${LABEL[$m]}: FAILED; last lines of $OUT/logs/$m.log:"
    tail -n 25 "$OUT/logs/$m.log" >&2
    return 1
  fi
}

log "fine-tuning ${#METHODS[@]} methods, $JOBS at a time, $FT_STEPS steps each (logs: $OUT/logs/<method>.log)"
failed=0
pids=()
names=()
t_ft=$SECONDS
reported=0
for i in "${!METHODS[@]}"; do
  m=${METHODS[$i]}
  while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n || true; done
  done_n=$((i - $(jobs -rp | wc -l)))
  if (( done_n > reported )); then   # the fine-tuning stage's progress, with an ETA from its rate
    log "fine-tuning: $done_n/${#METHODS[@]} methods done, $((SECONDS - t_ft)) s, $(eta $((SECONDS - t_ft)) "$done_n" "${#METHODS[@]}")"
    reported=$done_n
  fi
  log "${LABEL[$m]}: started"
  run_method "$m" &
  pids+=($!)
  names+=("$m")
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { failed=1; log "run failed: ${names[$i]}"; }
done
(( failed == 0 )) || die "some runs failed (see above); re-running reuses what finished"

# --- 6. the un-adapted base model, decoded and scored the same way --------------------------------
NOAD=$OUT/runs/base_no_adapter
mkdir -p "$NOAD"
base_beam() {
  "$PY" src/gpt2_beam.py --data "$DATA/test.jsonl" --batch_size 16 --seq_len "$SEQ" --eval_len "$EVAL_LEN" \
    --model_card "$CARD" --init_checkpoint "$BASE" --platform local --beam "$BEAM" --length_penalty "$LENGTH_PENALTY" \
    --no_repeat_ngram_size 4 --repetition_penalty 1.0 --eos_token_id "$EOT" \
    --work_dir "$NOAD" --output_file predict.base.jsonl >> "$OUT/logs/base_no_adapter.log" 2>&1 \
    || { tail -n 25 "$OUT/logs/base_no_adapter.log" >&2; die "beam search of the base model failed"; }
}
stage "base model without adapter: beam search" "$NOAD/predict.base.jsonl" base_beam
base_score() {
  "$PY" src/gpt2_decode.py --vocab "$VOCAB" --sample_file "$NOAD/predict.base.jsonl" \
    --input_file "$DATA/test_formatted.jsonl" --output_ref_file "$NOAD/e2e_ref.txt" --output_pred_file "$NOAD/e2e_pred.txt" \
    >> "$OUT/logs/base_no_adapter.log" 2>&1 &&
  "$PY" eval/score.py --task e2e --ref "$NOAD/e2e_ref.txt" --hyp "$NOAD/e2e_pred.txt" --json "$NOAD/scores.json" \
    ${NO_METEOR:+--no-meteor} >> "$OUT/logs/base_no_adapter.log" 2>&1 \
    || { tail -n 25 "$OUT/logs/base_no_adapter.log" >&2; die "decoding or scoring the base model failed"; }
  grep -i "^scorer" "$OUT/logs/base_no_adapter.log" | tail -n 1 | sed 's/^/[demo] /' || true
}
stage "base model without adapter: decode + score" "$NOAD/scores.json" base_score

# --- 7. one table, one plot: the report command any finished runs go through ------------------------
runs=()
labels=()
for m in "${METHODS[@]}"; do runs+=("$OUT/runs/$m"); labels+=(--label "${LABEL[$m]}=$OUT/runs/$m"); done
echo
"$PY" -m nlg.report "${runs[@]}" --base "base model, no adapter=$NOAD" "${labels[@]}" --published none \
  --out_md "$OUT/results.md" --out_csv "$OUT/results.csv" --out_png "$OUT/loss_curves.png" \
  --note "Every row decoded alike: beam $BEAM, length penalty $LENGTH_PENALTY, no-repeat n-gram 4 (the task scripts' per-method values are for the papers' runs)." \
  --note "Train CPU time: the training process's CPU seconds (runs shared the cores, so wall time would not compare); peak memory: its peak resident set." \
  --title "Demo ($SIZE): tiny GPT-2 ($N_LAYER x $N_EMBD, vocab $V) on $N_TEST test MRs, $FT_STEPS fine-tuning steps"
echo
log "table: $OUT/results.md"
[ -n "$TB_ARGS" ] || log "TensorBoard: tensorboard --logdir $OUT/runs"
log "total wall time: $((SECONDS - t_start)) s"
}

main "$@"
