#!/usr/bin/env bash
# Build the NLG datasets: NLG/data/{e2e,webnlg_challenge_2017,dart}/{train,valid,test}{_formatted.jsonl,.jsonl}
# from the raw E2E / WebNLG 2017 / DART files, as Microsoft LoRA's create_datasets.sh does
# (format_converting_<task>.py, then gpt2_encode.py --add_bos --add_eos).
#
#   bash create_datasets.sh                     raw files in NLG/data/<task>/; missing ones are downloaded
#   bash create_datasets.sh --from DIR          raw files from a local folder laid out like NLG/data
#                                               (e2e/valid.txt, webnlg_challenge_2017/dev.json, ...);
#                                               only the splits found there are built, the rest are listed
#
# Options:
#   --from DIR     local raw folder (env LORA_DATA_FROM); no download in this mode
#   --out DIR      where the built files go (env LORA_DATA_OUT; default NLG/data)
#   --vocab DIR    GPT-2 vocabulary (encoder.json, vocab.bpe); default NLG/vocab, else DIR/vocab of --from
#   --tasks LIST   comma-separated subset of e2e,webnlg,dart (default: all three)
#
# Downloads come from the files Microsoft's LoRA repository commits under examples/NLG/data (the
# copies its published numbers were made from), pinned to one commit, with the branch head and
# (DART) the dataset's own repository as fallbacks. Every download is checked against a sha256:
# pinned below where the file's hash is known; otherwise the hash of the first download is recorded
# in <out>/checksums.sha256 and later downloads must match it.
# LORA_DATA_URL_BASE replaces the download base (a folder laid out like NLG/data, any curl/wget URL,
# file:// included), e.g. for an internal mirror.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NLG="$ROOT/NLG"

FROM="${LORA_DATA_FROM:-}"
OUT="${LORA_DATA_OUT:-$NLG/data}"
VOCAB=""
TASKS="e2e,webnlg,dart"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --from) FROM="${2:?--from needs a folder}"; shift 2 ;;
        --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
        --vocab) VOCAB="${2:?--vocab needs a folder}"; shift 2 ;;
        --tasks) TASKS="${2:?--tasks needs a list}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "create_datasets.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if command -v python >/dev/null 2>&1; then PY=python; else PY=python3; fi
fi

LORA_COMMIT=3732c24dba0559fe4393bfc8f295b83947a2c5e0
LORA_PINNED="https://raw.githubusercontent.com/microsoft/LoRA/$LORA_COMMIT/examples/NLG/data"
LORA_HEAD="https://raw.githubusercontent.com/microsoft/LoRA/main/examples/NLG/data"
DART_REPO="https://raw.githubusercontent.com/Yale-LILY/dart/master/data/v1.1.1"

# sha256 of the raw files, where known. The dev files' hashes were taken from copies of the files
# LoRA commits (identical in size and content to the ones stored at the pinned commit). The other
# splits' hashes are not known here: they are recorded on first download (see above).
known_sha256() {
    case "$1" in
        e2e/valid.txt) echo ba963113c8401d3d26216c0dc0a6dae1ea6ea927de3bf830e32c41f65401c80d ;;
        webnlg_challenge_2017/dev.json) echo 50f5a2c24d760bc84ba3e852707cd3b43b0cf2da035b425f87945a2440880488 ;;
        dart/dart-v1.1.1-full-dev.json) echo 5038f3543b6d59b94ac4e3f69d15a0b01d8578913f862142e7c560200dd6e434 ;;
        *) echo "" ;;
    esac
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
    else "$PY" -c 'import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
    fi
}

recorded_sha256() {  # hash recorded on an earlier download, if any
    local f="$OUT/checksums.sha256"
    [ -f "$f" ] && awk -v p="$1" '$2 == p { print $1; exit }' "$f"
}

fetch() {  # fetch URL DEST: resumable download to DEST
    local url="$1" dest="$2"
    if command -v curl >/dev/null 2>&1; then
        local show=-sS
        [ -t 2 ] && show=--progress-bar
        curl -fL $show --retry 3 --connect-timeout 20 -C - -o "$dest" "$url"
    elif command -v wget >/dev/null 2>&1; then
        wget -c -O "$dest" "$url"
    else
        echo "neither curl nor wget is installed" >&2; return 1
    fi
}

FAILED=()
MISSING=()
LAST_ERR=""

download_raw() {  # download_raw REL: fetch OUT/REL from the mirrors, verify it; 0 on success
    local rel="$1" dest="$OUT/$1" part="$OUT/$1.part"
    local want; want="$(known_sha256 "$rel")"
    [ -n "$want" ] || want="$(recorded_sha256 "$rel")"
    local urls=()
    if [ -n "${LORA_DATA_URL_BASE:-}" ]; then
        urls=("$LORA_DATA_URL_BASE/$rel")
    else
        urls=("$LORA_PINNED/$rel" "$LORA_HEAD/$rel")
        case "$rel" in dart/*) urls+=("$DART_REPO/$(basename "$rel")") ;; esac
    fi
    mkdir -p "$(dirname "$dest")"
    local url got
    LAST_ERR="no source"
    for url in "${urls[@]}"; do
        echo "downloading $rel from $url"
        if ! fetch "$url" "$part"; then
            LAST_ERR="download failed: $url"; echo "  $LAST_ERR" >&2; rm -f "$part"; continue
        fi
        if head -c 200 "$part" | grep -q "git-lfs.github.com/spec"; then
            LAST_ERR="$url is a git-lfs pointer, not the data"; echo "  $LAST_ERR" >&2; rm -f "$part"; continue
        fi
        got="$(sha256_of "$part")"
        if [ -n "$want" ] && [ "$got" != "$want" ]; then
            LAST_ERR="sha256 mismatch from $url: got $got, expected $want"
            echo "  $LAST_ERR" >&2; rm -f "$part"; continue
        fi
        if [ -z "$want" ]; then
            echo "$got  $rel" >> "$OUT/checksums.sha256"
            echo "  no known sha256 for $rel: recorded $got in $OUT/checksums.sha256"
        fi
        mv "$part" "$dest"
        return 0
    done
    return 1
}

# build TASK SPLIT RAWREL: convert + encode one split
build() {
    local task="$1" split="$2" rel="$3" raw dir
    if [ -n "$FROM" ]; then
        raw="$FROM/$rel"
        if [ ! -f "$raw" ]; then MISSING+=("$rel"); echo "$split: $raw not found, skipped"; return 0; fi
    else
        raw="$OUT/$rel"
        if [ ! -f "$raw" ] && ! download_raw "$rel"; then FAILED+=("download $rel ($LAST_ERR)"); return 0; fi
    fi
    local want; want="$(known_sha256 "$rel")"
    if [ -n "$want" ] && [ "$(sha256_of "$raw")" != "$want" ]; then
        echo "warning: $raw differs from the published $rel (sha256); building from it anyway" >&2
    fi
    dir="$OUT/$(dirname "$rel")"
    mkdir -p "$dir"
    echo "$split..."
    if "$PY" "$NLG/src/format_converting_$task.py" "$raw" "$dir/${split}_formatted.jsonl" \
        && "$PY" "$NLG/src/gpt2_encode.py" --vocab "$VOCAB" --input "$dir/${split}_formatted.jsonl" \
            --output "$dir/$split.jsonl" --add_bos --add_eos; then
        BUILT+=("$dir/$split.jsonl")
    else
        FAILED+=("build $task $split")
    fi
}

# vocabulary for gpt2_encode.py
if [ -z "$VOCAB" ]; then
    if [ -f "$NLG/vocab/encoder.json" ] && [ -f "$NLG/vocab/vocab.bpe" ]; then VOCAB="$NLG/vocab"
    elif [ -n "$FROM" ] && [ -f "$FROM/vocab/encoder.json" ] && [ -f "$FROM/vocab/vocab.bpe" ]; then VOCAB="$FROM/vocab"
    fi
fi
if [ -z "$VOCAB" ] || [ ! -f "$VOCAB/encoder.json" ] || [ ! -f "$VOCAB/vocab.bpe" ]; then
    echo "create_datasets.sh: no GPT-2 vocabulary (encoder.json, vocab.bpe) in ${VOCAB:-NLG/vocab}:" \
         "run download_pretrained_checkpoints.sh or pass --vocab DIR" >&2
    exit 1
fi
if [ -n "$FROM" ] && [ ! -d "$FROM" ]; then
    echo "create_datasets.sh: --from $FROM is not a folder" >&2; exit 1
fi
mkdir -p "$OUT"
echo "raw files: ${FROM:-$OUT (downloading missing ones)}; output: $OUT; vocabulary: $VOCAB"

BUILT=()
for task in ${TASKS//,/ }; do
    case "$task" in
        e2e)
            echo "creating e2e datasets..."
            for s in train test valid; do build e2e "$s" "e2e/$s.txt"; done ;;
        webnlg)
            echo "creating webnlg datasets..."
            build webnlg train webnlg_challenge_2017/train.json
            build webnlg test webnlg_challenge_2017/test.json
            build webnlg valid webnlg_challenge_2017/dev.json ;;
        dart)
            echo "creating dart datasets..."
            for s in train test; do build dart "$s" "dart/dart-v1.1.1-full-$s.json"; done
            build dart valid dart/dart-v1.1.1-full-dev.json ;;
        *) echo "create_datasets.sh: unknown task '$task' (e2e, webnlg, dart)" >&2; exit 2 ;;
    esac
done

echo
echo "built ${#BUILT[@]} split(s):"
for f in "${BUILT[@]+"${BUILT[@]}"}"; do echo "  $f"; done
if [ ${#MISSING[@]} -gt 0 ]; then
    echo "not in $FROM (skipped):"
    for f in "${MISSING[@]}"; do echo "  $f"; done
fi
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "FAILED:" >&2
    for f in "${FAILED[@]}"; do echo "  $f" >&2; done
    exit 1
fi
if [ ${#BUILT[@]} -eq 0 ]; then
    echo "create_datasets.sh: nothing was built" >&2; exit 1
fi
echo "script complete!"
