#!/usr/bin/env bash
# A real model on real data in minutes on a laptop CPU (8 min 42 s on an idle 2-core machine,
# 2026-12-07, model and data already there): SmolLM2-135M-Instruct (a Llama) trained
# with LoRA on a slice of E2E through this pipeline (e2e_lora.sh --backbone hf:...: encode with
# its tokenizer -> train -> beam search -> decode -> score), then a few generated sentences
# beside their references, the scores and the time each part took. Offline once the model and
# the data are here; when absent they are built first (those two steps need the network):
#   bash download_pretrained_checkpoints.sh --models smollm2   -> NLG/pretrained_checkpoints/SmolLM2-135M-Instruct
#   bash create_datasets.sh --tasks e2e --formatted-only       -> NLG/data/e2e/*_formatted.jsonl
#
#   bash NLG/scripts/real_e2e.sh [--work_dir DIR] [--force]
#
# What it runs (all can be overridden from the environment, e.g. MAX_STEP=400 bash ...):
#   MODEL       the model folder (default NLG/pretrained_checkpoints/SmolLM2-135M-Instruct)
#   E2E_DIR     the built E2E data (default NLG/data/e2e)
#   TRAIN_LINES training examples drawn from train_formatted.jsonl (default 1200: 150 steps of 8,
#               one pass)
#   TEST_MRS    distinct test meaning representations decoded, with all their references (30)
#   MAX_STEP (150) LR (0.002) WARMUP_STEP (15) TRAIN_BATCH_SIZE (8) SEQ_LEN (128) BEAM (4)
#   EVAL_LEN (48) SHOW (5: sentences printed) PRECISION (fp32) NO_METEOR (1: skip METEOR)
# LoRA r = 4, alpha = 32 on q_proj, v_proj, label smoothing 0.1, the E2E beam settings (length
# penalty 0.9, no-repeat 4-grams): the paper's except the learning rate, 10x the paper's 2e-4
# for a run of 150 steps instead of 5 epochs, and the slices. The scores are those of this short
# run on TEST_MRS MRs, not the paper's setting: they show the pipeline works end to end.
set -euo pipefail

main() {
die() { echo "real_e2e.sh: error: $*" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nlg=$(cd "$here/.." && pwd)
root=$(cd "$nlg/.." && pwd)
PYTHON=${PYTHON:-python}
WORK_DIR=${WORK_DIR:-$nlg/trained_models/real_e2e}
FORCE=${FORCE:-0}
while [ $# -gt 0 ]; do
  case "$1" in
    --work_dir) WORK_DIR=$2; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
case "$WORK_DIR" in /*) ;; *) WORK_DIR=$PWD/$WORK_DIR ;; esac
MODEL=${MODEL:-$nlg/pretrained_checkpoints/SmolLM2-135M-Instruct}
E2E_DIR=${E2E_DIR:-$nlg/data/e2e}
SHOW=${SHOW:-5}

t0=$SECONDS
if [ ! -f "$MODEL/config.json" ]; then
  echo "== $MODEL is absent: download_pretrained_checkpoints.sh --models smollm2"
  bash "$root/download_pretrained_checkpoints.sh" --models smollm2 \
    || die "no SmolLM2 model (see download_pretrained_checkpoints.sh --help)"
fi
if [ ! -f "$E2E_DIR/test_formatted.jsonl" ]; then
  echo "== $E2E_DIR is absent: create_datasets.sh --tasks e2e --formatted-only"
  bash "$root/create_datasets.sh" --tasks e2e --formatted-only \
    || die "no E2E data (see create_datasets.sh --help)"
fi

# The slices (seeded, so a second run reuses every stage): training and validation lines drawn
# at random, and TEST_MRS test MRs with every reference line they have.
mkdir -p "$WORK_DIR/data"
"$PYTHON" - "$E2E_DIR" "$WORK_DIR/data" "${TRAIN_LINES:-1200}" "${TEST_MRS:-30}" <<'PY'
import json, os, random, sys
src, out, n_train, n_test = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def lines(split):
    with open(os.path.join(src, f"{split}_formatted.jsonl"), encoding="utf8") as f:
        return f.read().splitlines()
def write(split, rows):
    path = os.path.join(out, f"{split}_formatted.jsonl")
    text = "".join(r + "\n" for r in rows)
    if not os.path.isfile(path) or open(path, encoding="utf8").read() != text:
        with open(path, "w", encoding="utf8") as f:
            f.write(text)
rng = random.Random(0)
train = lines("train")
write("train", rng.sample(train, min(n_train, len(train))))
valid = lines("valid")
write("valid", rng.sample(valid, min(200, len(valid))))
test = lines("test")
mrs = list(dict.fromkeys(json.loads(r)["context"] for r in test))
keep = set(rng.sample(mrs, min(n_test, len(mrs))))
write("test", [r for r in test if json.loads(r)["context"] in keep])
PY

export MAX_STEP=${MAX_STEP:-150} LR=${LR:-0.002} WARMUP_STEP=${WARMUP_STEP:-15}
export TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-8} VALID_BATCH_SIZE=${VALID_BATCH_SIZE:-8}
export SEQ_LEN=${SEQ_LEN:-128} BEAM=${BEAM:-4} EVAL_LEN=${EVAL_LEN:-48} BEAM_BATCH_SIZE=${BEAM_BATCH_SIZE:-40}
export SAVE_INTERVAL=100000 PYTHON
export EXTRA_FT_ARGS="--eval_interval 100000 --log_interval 20 --no_tensorboard ${EXTRA_FT_ARGS:-}"
force=()
[ "$FORCE" != 1 ] || force=(--force)
t1=$SECONDS
bash "$here/e2e_lora.sh" --backbone "hf:$MODEL" --data_dir "$WORK_DIR/data" \
  --work_dir "$WORK_DIR/run" --launcher python "${force[@]}"
t2=$SECONDS

"$PYTHON" - "$WORK_DIR" "$SHOW" "$((t1 - t0))" "$((t2 - t1))" <<'PY'
import json, os, sys
work, show = sys.argv[1], int(sys.argv[2])
run = os.path.join(work, "run")
contexts = list(dict.fromkeys(json.loads(r)["context"] for r in
                              open(os.path.join(work, "data", "test_formatted.jsonl"), encoding="utf8")))
preds = open(os.path.join(run, "e2e_pred.txt"), encoding="utf8").read().splitlines()
blocks = [b.splitlines() for b in open(os.path.join(run, "e2e_ref.txt"), encoding="utf8").read().split("\n\n") if b.strip()]
print()
for mr, pred, refs in list(zip(contexts, preds, blocks))[:show]:
    print(f"MR:         {mr}")
    print(f"generated:  {pred}")
    print(f"reference:  {refs[0]}" + (f"  (+{len(refs) - 1} more)" if len(refs) > 1 else ""))
    print()
scores = json.load(open(os.path.join(run, "scores.json")))
print("scores on", len(contexts), "test MRs:", ", ".join(f"{k} {v:.4f}" for k, v in scores.items()
                                                      if isinstance(v, (int, float))))
info = json.load(open(os.path.join(run, "run_info.json")))
print(f"training: {info['last_step']} steps, {info['train_time_s']:.0f} s wall, "
      f"{info['train_cpu_s']:.0f} s CPU; trainable {info['trainable_params']:,} of "
      f"{info['total_params']:,}")
print(f"time: data {sys.argv[3]} s, pipeline (encode, train, beam, decode, score) {sys.argv[4]} s")
PY
}

main "$@"
