#!/usr/bin/env bash
# Build the NLG datasets: NLG/data/{e2e,webnlg_challenge_2017,dart}/{train,valid,test}{_formatted.jsonl,.jsonl}
# from the raw E2E / WebNLG 2017 / DART files, as Microsoft LoRA's create_datasets.sh does
# (format_converting_<task>.py, then gpt2_encode.py --add_bos --add_eos); on request (--tasks glue)
# also GLUE for NLU/.
#
#   bash create_datasets.sh                     raw files in NLG/data/<task>/; missing ones are downloaded
#   bash create_datasets.sh --from DIR          raw files from a local folder laid out like NLG/data
#                                               (e2e/valid.txt, webnlg_challenge_2017/dev.json, ...);
#                                               only the splits found there are built, the rest are listed
#   bash create_datasets.sh --from DIR --tasks e2e   E2E from the official release CSVs where DIR (or
#                                               DIR/e2e) has no Microsoft e2e/<split>.txt: trainset.csv,
#                                               devset.csv, testset_w_refs.csv become e2e/{train,valid,
#                                               test}.txt in Microsoft's line format (NLG/src/format_e2e_csv.py)
#   bash create_datasets.sh --tasks glue        GLUE for NLU/: NLU/data/glue/<Task>/{train,dev}.tsv
#                                               (MNLI: dev_matched.tsv, dev_mismatched.tsv), the layout of
#                                               GLUE's download_glue_data.py; no GPT-2 vocabulary needed
#   bash create_datasets.sh --tasks glue --from DIR   GLUE from DIR/glue/<Task>/ (or DIR/<Task>/)
#
# Options:
#   --from DIR     local raw folder (env LORA_DATA_FROM); no download in this mode
#   --out DIR      where the built files go (env LORA_DATA_OUT; default NLG/data)
#   --vocab DIR    GPT-2 vocabulary (encoder.json, vocab.bpe); default NLG/vocab, else DIR/vocab of --from
#   --formatted-only  the text splits (<split>_formatted.jsonl) alone, not encoded for GPT-2: what a
#                  run on a Hugging Face backbone reads (--backbone hf:...; it encodes them with the
#                  model's own tokenizer); needs no GPT-2 vocabulary
#   --tasks LIST   comma-separated subset of e2e,webnlg,dart,glue (default: e2e,webnlg,dart)
#   --glue-tasks LIST  with glue: subset of CoLA,SST-2,MRPC,STS-B,QQP,MNLI,QNLI,RTE (default: all eight;
#                  also cola,sst2,mrpc,stsb,qqp,mnli,qnli,rte)
#   --glue-out DIR where GLUE goes (env LORA_GLUE_OUT; default NLU/data/glue)
#
# Downloads come from the files Microsoft's LoRA repository commits under examples/NLG/data (the
# copies its published numbers were made from), pinned to one commit, with the branch head and
# (DART) the dataset's own repository as fallbacks. Every download is checked against a sha256:
# pinned below where the file's hash is known (or given in LORA_SHA256="NAME=SHA256 ..."), or recorded
# by an earlier run in <out>/checksums.sha256; with neither, a download is refused unless
# LORA_TRUST_FIRST_DOWNLOAD=1 records the first download's hash (later ones must match it).
# LORA_DATA_URL_BASE replaces the download base (a folder laid out like NLG/data, any curl/wget URL,
# file:// included), e.g. for an internal mirror.
#
# GLUE: every file is read with NLU/src/glue_data.py (field counts, labels) before it takes its place;
# a bad file is reported with its line and not installed. From a local folder each task's folder is
# copied (test*.tsv too, unchecked); a task folder may instead be given as GLUE's archive (DIR/glue/
# CoLA.zip, QNLIv2.zip, ...) or, for MRPC, as the raw msr_paraphrase_train.txt + mrpc_dev_ids.tsv
# (+ msr_paraphrase_test.txt) in DIR/glue/MRPC/, split as download_glue_data.py does. Downloads: the
# archives download_glue_data.py fetches (dl.fbaipublicfiles.com/glue/data), and for MRPC SentEval's
# copies of the corpus plus GLUE's list of dev pairs, all pinned (the sha256s Hugging Face's datasets
# library and other GLUE loaders check); they resume from a .part file kept in <glue-out>/.downloads.
# Tasks already in place (and readable) are kept. LORA_GLUE_URL_BASE replaces the download base (a
# folder holding CoLA.zip ... and msr_paraphrase_{train,test}.txt, mrpc_dev_ids.tsv).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NLG="$ROOT/NLG"

FROM="${LORA_DATA_FROM:-}"
OUT="${LORA_DATA_OUT:-$NLG/data}"
VOCAB=""
FORMATTED_ONLY=0
TASKS="e2e,webnlg,dart"
GLUE_OUT="${LORA_GLUE_OUT:-$ROOT/NLU/data/glue}"
GLUE_TASKS="CoLA,SST-2,MRPC,STS-B,QQP,MNLI,QNLI,RTE"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --from) FROM="${2:?--from needs a folder}"; shift 2 ;;
        --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
        --vocab) VOCAB="${2:?--vocab needs a folder}"; shift 2 ;;
        --formatted-only) FORMATTED_ONLY=1; shift ;;
        --tasks) TASKS="${2:?--tasks needs a list}"; shift 2 ;;
        --glue-tasks) GLUE_TASKS="${2:?--glue-tasks needs a list}"; shift 2 ;;
        --glue-out) GLUE_OUT="${2:?--glue-out needs a folder}"; shift 2 ;;
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

# sha256 of the raw files, where known. The dev files' hashes (and E2E's test.txt) were taken from
# copies of the files LoRA commits (identical in size and content to the ones stored at the pinned
# commit). The other splits' hashes are not known here: give them (LORA_SHA256) or record the first
# download's (LORA_TRUST_FIRST_DOWNLOAD=1), see above.
known_sha256() {
    local pair
    for pair in ${LORA_SHA256:-}; do
        if [ "${pair%%=*}" = "$1" ]; then echo "${pair#*=}"; return; fi
    done
    case "$1" in
        e2e/valid.txt) echo ba963113c8401d3d26216c0dc0a6dae1ea6ea927de3bf830e32c41f65401c80d ;;
        # test.txt at the pinned commit (git blob 084da9f4, unchanged since October 2021)
        e2e/test.txt) echo 81b1bcd40c4f12845ec4eb61a77bf43765d112483cd9b2f91ef10bfc1b3d8f13 ;;
        # The E2E release (tuetschek/e2e-dataset, CC BY-SA 4.0): devset.csv and testset_w_refs.csv as
        # that repository stores them; trainset.csv as the copy the project's tests use (42,061 rows)
        e2e/trainset.csv) echo f27d48df45815288ab15619d47a79028c300fbb7f42e373668aba0b98c1d57c6 ;;
        e2e/devset.csv) echo fc26b78cdb849c80545f513b223d1e051138b43882eeb79e3eb153e689c864f9 ;;
        e2e/testset_w_refs.csv) echo edc8db685e39bb9824d5bd70c18b1c9b0412d14b527aa960e2d1c8251ee15ccd ;;
        webnlg_challenge_2017/dev.json) echo 50f5a2c24d760bc84ba3e852707cd3b43b0cf2da035b425f87945a2440880488 ;;
        dart/dart-v1.1.1-full-dev.json) echo 5038f3543b6d59b94ac4e3f69d15a0b01d8578913f862142e7c560200dd6e434 ;;
        # GLUE (dl.fbaipublicfiles.com): the sha256s Hugging Face's datasets library and other GLUE
        # loaders (Transformers.jl's DataDeps, ...) check these archives against
        glue/CoLA.zip) echo f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff ;;
        glue/SST-2.zip) echo d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa ;;
        glue/STS-B.zip) echo e60a6393de5a8b5b9bac5020a1554b54e3691f9d600b775bd131e613ac179c85 ;;
        glue/QQP-clean.zip) echo 40e7c862c04eb26ee04b67fd900e76c45c6ba8e6d8fab4f8f1f8072a1a3fbae0 ;;
        glue/MNLI.zip) echo e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633 ;;
        glue/QNLIv2.zip) echo e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5 ;;
        glue/RTE.zip) echo 6bf86de103ecd335f3441bd43574d23fef87ecc695977a63b82d5efb206556ee ;;
        glue/msr_paraphrase_train.txt) echo 60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89 ;;
        glue/msr_paraphrase_test.txt) echo a04e271090879aaba6423d65b94950c089298587d9c084bf9cd7439bd785f784 ;;
        glue/mrpc_dev_ids.tsv) echo 971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7 ;;
        *) echo "" ;;
    esac
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
    else "$PY" -c 'import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"
    fi
}

recorded_sha256_in() {  # recorded_sha256_in DIR REL: hash recorded in DIR/checksums.sha256, if any
    local f="$1/checksums.sha256"
    [ -f "$f" ] && awk -v p="$2" '$2 == p { print $1; exit }' "$f"
}
recorded_sha256() { recorded_sha256_in "$OUT" "$1"; }  # hash recorded on an earlier download, if any

UNREACHABLE=" "
TRIED=" "
reachable() {  # reachable URL: can its host be reached at all (asked once per host, seconds)?
    local host rc=0
    case "$1" in http://*|https://*) ;; *) return 0 ;; esac
    host="${1#*://}"; host="${host%%/*}"
    case "$UNREACHABLE" in *" $host "*) return 1 ;; esac
    case " ${REACHED:-} " in *" $host "*) return 0 ;; esac
    command -v curl >/dev/null 2>&1 || return 0
    curl -sS -o /dev/null -I --connect-timeout 5 --max-time 10 "${1%%://*}://$host/" 2>/dev/null || rc=$?
    case "$rc" in
        6|7|28) UNREACHABLE="$UNREACHABLE$host "; return 1 ;;
        *) REACHED="${REACHED:-} $host"; return 0 ;;
    esac
}

fetch() {  # fetch URL DEST: resumable download to DEST (fails at once when the host is unreachable)
    local url="$1" dest="$2"
    TRIED="$TRIED$url "
    if ! reachable "$url"; then
        echo "  $url: host unreachable (offline?)" >&2; return 1
    fi
    if command -v curl >/dev/null 2>&1; then
        local show=-sS
        [ -t 2 ] && show=--progress-bar
        curl -fL $show --retry 2 --connect-timeout 10 -C - -o "$dest" "$url"
    elif command -v wget >/dev/null 2>&1; then
        wget -c -O "$dest" "$url"
    else
        echo "neither curl nor wget is installed" >&2; return 1
    fi
}

FAILED=()
MISSING=()
LAST_ERR=""

NO_HASH_HINT="give its sha256 as LORA_SHA256=\"NAME=SHA256\", or LORA_TRUST_FIRST_DOWNLOAD=1 to record the first download's"

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
    if [ -z "$want" ] && [ "${LORA_TRUST_FIRST_DOWNLOAD:-0}" != 1 ]; then
        LAST_ERR="no sha256 to check $rel against (none pinned or recorded): $NO_HASH_HINT"
        return 1
    fi
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

# The E2E release CSV a split of Microsoft's E2E files is made from (its testset.csv has no references)
e2e_release_csv() {
    case "$1" in train) echo trainset.csv ;; valid) echo devset.csv ;; test) echo testset_w_refs.csv ;; esac
}

# e2e_from_csv SPLIT REL: OUT/REL (Microsoft's line format) from the release CSV in FROM/e2e or FROM;
# 1 when there is none, 2 when it cannot be converted
e2e_from_csv() {
    local split="$1" rel="$2" name csv="" d want
    name="$(e2e_release_csv "$split")"
    for d in "$FROM/e2e" "$FROM"; do
        if [ -f "$d/$name" ]; then csv="$d/$name"; break; fi
    done
    [ -n "$csv" ] || return 1
    want="$(known_sha256 "e2e/$name")"
    if [ -n "$want" ] && [ "$(sha256_of "$csv")" != "$want" ]; then
        echo "warning: $csv differs from the E2E release's $name (sha256); converting it anyway" >&2
    fi
    mkdir -p "$OUT/$(dirname "$rel")"
    echo "$split: converting $csv to Microsoft's line format"
    if ! "$PY" -m nlg.format_e2e_csv "$csv" "$OUT/$rel"; then
        FAILED+=("convert $csv"); return 2
    fi
    return 0
}

# build TASK SPLIT RAWREL: convert + encode one split
build() {
    local task="$1" split="$2" rel="$3" raw dir rc
    if [ -n "$FROM" ]; then
        raw="$FROM/$rel"
        if [ ! -f "$raw" ] && [ "$task" = e2e ]; then
            # no Microsoft file: the official release CSV, converted into OUT
            e2e_from_csv "$split" "$rel"; rc=$?
            [ $rc = 2 ] && return 0
            [ $rc = 0 ] && raw="$OUT/$rel"
        fi
        if [ ! -f "$raw" ]; then
            if [ "$task" = e2e ]; then MISSING+=("$rel (or the release's $(e2e_release_csv "$split"))")
            else MISSING+=("$rel"); fi
            echo "$split: $raw not found, skipped"; return 0
        fi
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
    if [ "$FORMATTED_ONLY" = 1 ]; then
        if "$PY" "$NLG/src/format_converting_$task.py" "$raw" "$dir/${split}_formatted.jsonl"; then
            BUILT+=("$dir/${split}_formatted.jsonl")
        else
            FAILED+=("build $task $split")
        fi
    elif "$PY" "$NLG/src/format_converting_$task.py" "$raw" "$dir/${split}_formatted.jsonl" \
        && "$PY" "$NLG/src/gpt2_encode.py" --vocab "$VOCAB" --input "$dir/${split}_formatted.jsonl" \
            --output "$dir/$split.jsonl" --add_bos --add_eos; then
        BUILT+=("$dir/$split.jsonl")
    else
        FAILED+=("build $task $split")
    fi
}

# ---------------------------------------------------------------------------------------------
# GLUE (NLU/): folders and files as download_glue_data.py writes them, read by NLU/src/glue_data.py

glue_spec() {  # glue_spec NAME: "Folder glue_data-name archive" ("-": MRPC has no archive), or nothing
    case "$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')" in
        cola) echo "CoLA cola CoLA.zip" ;;
        sst-2|sst2) echo "SST-2 sst2 SST-2.zip" ;;
        mrpc) echo "MRPC mrpc -" ;;
        sts-b|stsb) echo "STS-B stsb STS-B.zip" ;;
        qqp) echo "QQP qqp QQP-clean.zip" ;;
        mnli) echo "MNLI mnli MNLI.zip" ;;
        qnli) echo "QNLI qnli QNLIv2.zip" ;;
        rte) echo "RTE rte RTE.zip" ;;
    esac
}

glue_dev_files() {  # the first is required; MNLI's mismatched dev set is optional for glue_data.py
    if [ "$1" = MNLI ]; then echo "dev_matched.tsv dev_mismatched.tsv"; else echo "dev.tsv"; fi
}

glue_missing() {  # glue_missing DIR FOLDER: the required files DIR lacks
    local f dev0
    dev0="$(glue_dev_files "$2")"; dev0="${dev0%% *}"
    for f in train.tsv "$dev0"; do [ -f "$1/$f" ] || printf '%s ' "$f"; done
}

glue_check() {  # glue_check NAME FILE...: read each file as the NLU code does; last line is the error
    "$PY" - "$ROOT/NLU/src" "$@" <<'PY'
import os, sys
sys.path.insert(0, sys.argv[1])
import glue_data
for path in sys.argv[3:]:
    try:
        n = len(glue_data.read_tsv(path, sys.argv[2]))
    except UnicodeDecodeError as e:
        print(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})"); sys.exit(1)
    except ValueError as e:
        print(e); sys.exit(1)
    if n == 0:
        print(f"{path}: no examples"); sys.exit(1)
    print(f"  {os.path.basename(path)}: {n} examples")
PY
}

# glue_install SRC FOLDER NAME: check SRC's files, then copy them into GLUE_OUT/FOLDER
glue_install() {
    local src="$1" folder="$2" name="$3" dst="$GLUE_OUT/$2" f out
    local check=()
    for f in train.tsv $(glue_dev_files "$folder"); do [ -f "$src/$f" ] && check+=("$src/$f"); done
    if ! out="$(glue_check "$name" "${check[@]}")"; then
        FAILED+=("glue/$folder: ${out##*$'\n'} (not installed)"); return 1
    fi
    echo "$folder -> $dst"; printf '%s\n' "$out"
    mkdir -p "$dst"
    for f in train.tsv $(glue_dev_files "$folder") test.tsv test_matched.tsv test_mismatched.tsv; do
        [ -f "$src/$f" ] || continue
        [ "$src/$f" -ef "$dst/$f" ] && continue
        if ! { cp "$src/$f" "$dst/$f.part" && mv "$dst/$f.part" "$dst/$f"; }; then
            rm -f "$dst/$f.part"; FAILED+=("glue/$folder: could not write $dst/$f"); return 1
        fi
    done
    case " $(glue_dev_files "$folder") " in
        *" dev_mismatched.tsv "*)
            if [ ! -f "$src/dev_mismatched.tsv" ]; then
                if [ -n "$FROM" ]; then MISSING+=("glue/$folder/dev_mismatched.tsv")
                else echo "note: no $folder/dev_mismatched.tsv (only the matched dev set will be evaluated)"; fi
            fi ;;
    esac
    BUILT+=("$dst")
}

# glue_from_archive ZIP FOLDER NAME: GLUE's task archive, unpacked and installed
glue_from_archive() {
    local zip="$1" folder="$2" name="$3" tmp found rc
    tmp="$(mktemp -d "$GLUE_OUT/.unpack.XXXXXX")" || { FAILED+=("glue/$folder: cannot write in $GLUE_OUT"); return 1; }
    if ! "$PY" -m zipfile -e "$zip" "$tmp" 2>/dev/null; then
        FAILED+=("glue/$folder: $zip is not a readable zip archive"); rm -rf "$tmp"; return 1
    fi
    # the shallowest train.tsv: archives may hold copies of the originals further down
    found="$(find "$tmp" -name train.tsv ! -path '*/__MACOSX/*' \
        | awk '{ print gsub("/", "/") "\t" $0 }' | sort -n | head -n 1 | cut -f2-)"
    if [ -z "$found" ] || [ -n "$(glue_missing "$(dirname "$found")" "$folder")" ]; then
        FAILED+=("glue/$folder: $zip holds no $folder/train.tsv + $(glue_dev_files "$folder" | cut -d' ' -f1)")
        rm -rf "$tmp"; return 1
    fi
    glue_install "$(dirname "$found")" "$folder" "$name"; rc=$?
    rm -rf "$tmp"
    return $rc
}

# glue_mrpc TRAIN_TXT DEV_IDS [TEST_TXT]: MRPC's train/dev split of the corpus' training file, as
# download_glue_data.py makes it: the pairs listed in the dev ids go to dev.tsv, in file order, each
# row stripped of surrounding whitespace; the header is kept for both. test.tsv gets an index column.
glue_mrpc() {
    local train_txt="$1" ids="$2" test_txt="${3:-}" tmp err rc
    # awk tells the two files apart by line numbers: an empty id list would swallow the corpus
    [ -s "$ids" ] || { FAILED+=("glue/MRPC: $ids lists no dev pairs"); return 1; }
    tmp="$(mktemp -d "$GLUE_OUT/.mrpc.XXXXXX")" || { FAILED+=("glue/MRPC: cannot write in $GLUE_OUT"); return 1; }
    err="$(awk -F'\t' -v tr="$tmp/train.tsv" -v dv="$tmp/dev.tsv" '
        function trim(s) { sub(/^[ \t\r\n\f\v]+/, "", s); sub(/[ \t\r\n\f\v]+$/, "", s); return s }
        FNR == NR {
            line = trim($0)
            if (line != "") { split(line, f, "\t"); k = f[1] "\t" f[2]; if (!(k in ids)) { ids[k] = 1; nids++ } }
            next
        }
        FNR == 1 { sub(/\r$/, ""); print > tr; print > dv; next }
        {
            line = trim($0)
            if (line == "") next
            if (split(line, f, "\t") != 5) {
                printf "%s:%d: expected 5 tab-separated fields (Quality, #1 ID, #2 ID, #1 String, #2 String)\n", FILENAME, FNR
                bad = 1; exit
            }
            k = f[2] "\t" f[3]
            if (k in ids) { print line > dv; seen[k] = 1 } else print line > tr
        }
        END {
            if (bad) exit 1
            for (k in ids) if (!(k in seen)) miss++
            if (nids == 0) { printf "%s lists no dev pairs\n", ARGV[1]; exit 1 }
            if (miss) { printf "%d of the %d dev pairs of %s are not in %s\n", miss, nids, ARGV[1], ARGV[2]; exit 1 }
        }' "$ids" "$train_txt" 2>&1)"
    rc=$?
    if [ $rc -eq 0 ] && [ -n "$test_txt" ]; then
        err="$(awk -F'\t' -v te="$tmp/test.tsv" '
            function trim(s) { sub(/^[ \t\r\n\f\v]+/, "", s); sub(/[ \t\r\n\f\v]+$/, "", s); return s }
            FNR == 1 { print "index\t#1 ID\t#2 ID\t#1 String\t#2 String" > te; next }
            {
                line = trim($0)
                if (line == "") next
                if (split(line, f, "\t") != 5) { printf "%s:%d: expected 5 tab-separated fields\n", FILENAME, FNR; exit 1 }
                printf "%d\t%s\t%s\t%s\t%s\n", n++, f[2], f[3], f[4], f[5] > te
            }' "$test_txt" 2>&1)"
        rc=$?
    fi
    if [ $rc -ne 0 ]; then
        FAILED+=("glue/MRPC: ${err:-could not split $train_txt}"); rm -rf "$tmp"; return 1
    fi
    glue_install "$tmp" MRPC mrpc; rc=$?
    rm -rf "$tmp"
    return $rc
}

glue_urls() {  # mirrors for one GLUE file, best first
    if [ -n "${LORA_GLUE_URL_BASE:-}" ]; then echo "$LORA_GLUE_URL_BASE/$1"; return; fi
    case "$1" in
        msr_paraphrase_*) echo "https://dl.fbaipublicfiles.com/senteval/senteval_data/$1" ;;
        mrpc_dev_ids.tsv)
            echo "https://dl.fbaipublicfiles.com/glue/data/mrpc_dev_ids.tsv"
            # the address download_glue_data.py uses
            echo "https://firebasestorage.googleapis.com/v0/b/mtl-sentence-representations.appspot.com/o/data%2Fmrpc_dev_ids.tsv?alt=media&token=ec5c0836-31d5-48f4-b431-7480817f1adc" ;;
        *) echo "https://dl.fbaipublicfiles.com/glue/data/$1" ;;
    esac
}

# glue_fetch NAME: GLUE_OUT/.downloads/NAME, verified; resumes a .part left by an interrupted run
glue_fetch() {
    local name="$1" dir="$GLUE_OUT/.downloads" want got url
    local dest="$GLUE_OUT/.downloads/$1" part="$GLUE_OUT/.downloads/$1.part"
    mkdir -p "$dir"
    want="$(known_sha256 "glue/$name")"
    [ -n "$want" ] || want="$(recorded_sha256_in "$GLUE_OUT" "glue/$name")"
    if [ -f "$dest" ] && [ -n "$want" ] && [ "$(sha256_of "$dest")" = "$want" ]; then return 0; fi
    rm -f "$dest"
    local urls=()
    IFS=$'\n' read -r -d '' -a urls < <(glue_urls "$name"; printf '\0')
    LAST_ERR="no source"
    if [ -z "$want" ] && [ "${LORA_TRUST_FIRST_DOWNLOAD:-0}" != 1 ]; then
        LAST_ERR="no sha256 to check $name against (none pinned or recorded): $NO_HASH_HINT"
        return 1
    fi
    for url in "${urls[@]}"; do
        echo "downloading $name from $url"
        if ! fetch "$url" "$part"; then
            # a finished .part makes a resumed request fail (nothing left to fetch): check it below
            if [ ! -s "$part" ] || [ -z "$want" ] || [ "$(sha256_of "$part")" != "$want" ]; then
                LAST_ERR="download failed: $url"
                if [ -s "$part" ]; then LAST_ERR="$LAST_ERR (partial file kept as $part, rerun to resume)"
                else rm -f "$part"; fi
                echo "  $LAST_ERR" >&2; continue
            fi
        fi
        got="$(sha256_of "$part")"
        if [ -n "$want" ] && [ "$got" != "$want" ]; then
            LAST_ERR="sha256 mismatch from $url: got $got, expected $want"
            echo "  $LAST_ERR" >&2; rm -f "$part"; continue
        fi
        if [ -z "$want" ]; then
            echo "$got  glue/$name" >> "$GLUE_OUT/checksums.sha256"
            echo "  no known sha256 for $name: recorded $got in $GLUE_OUT/checksums.sha256"
        fi
        mv "$part" "$dest"
        return 0
    done
    return 1
}

glue_warn_unpublished() {  # glue_warn_unpublished FILE [PUBLISHED_NAME]: a local copy of a pinned file
    local pub="${2:-$(basename "$1")}" want
    want="$(known_sha256 "glue/$pub")"
    if [ -n "$want" ] && [ "$(sha256_of "$1")" != "$want" ]; then
        echo "warning: $1 differs from the published $pub (sha256); using it anyway" >&2
    fi
}

glue_local() {  # glue_local FOLDER NAME ARCHIVE: one task from GLUE_FROM
    local folder="$1" name="$2" archive="$3" src="$GLUE_FROM/$1" miss f raw=""
    if [ -f "$src/train.tsv" ] || [ -n "$(ls "$src"/dev*.tsv 2>/dev/null | grep -v dev_ids)" ]; then
        miss="$(glue_missing "$src" "$folder")"
        if [ -n "$miss" ]; then
            for f in $miss; do MISSING+=("glue/$folder/$f"); done
            echo "$folder: $src lacks ${miss% }, skipped"; return 0
        fi
        glue_install "$src" "$folder" "$name"
    elif [ "$archive" != - ] && [ -f "$GLUE_FROM/$archive" ]; then
        echo "$folder: unpacking $GLUE_FROM/$archive"
        glue_warn_unpublished "$GLUE_FROM/$archive"
        glue_from_archive "$GLUE_FROM/$archive" "$folder" "$name"
    elif [ "$folder" = MRPC ]; then
        # download_glue_data.py leaves the dev pairs in MRPC/dev_ids.tsv
        for f in "$src/mrpc_dev_ids.tsv" "$src/dev_ids.tsv" "$GLUE_FROM/mrpc_dev_ids.tsv"; do
            if [ -f "$f" ] && [ -f "$(dirname "$f")/msr_paraphrase_train.txt" ]; then raw="$f"; break; fi
        done
        if [ -z "$raw" ]; then
            MISSING+=("glue/MRPC")
            echo "MRPC: no MRPC/{train,dev}.tsv or msr_paraphrase_train.txt + mrpc_dev_ids.tsv in $GLUE_FROM, skipped"
            return 0
        fi
        f="$(dirname "$raw")"
        echo "MRPC: splitting $f/msr_paraphrase_train.txt with $raw"
        glue_warn_unpublished "$f/msr_paraphrase_train.txt"
        glue_warn_unpublished "$raw" mrpc_dev_ids.tsv
        if [ -f "$f/msr_paraphrase_test.txt" ]; then
            glue_warn_unpublished "$f/msr_paraphrase_test.txt"
            glue_mrpc "$f/msr_paraphrase_train.txt" "$raw" "$f/msr_paraphrase_test.txt"
        else
            glue_mrpc "$f/msr_paraphrase_train.txt" "$raw"
        fi
    else
        MISSING+=("glue/$folder"); echo "$folder: not in $GLUE_FROM, skipped"
    fi
}

glue_download() {  # glue_download FOLDER NAME ARCHIVE: one task, unless it is in place already
    local folder="$1" name="$2" archive="$3" dst="$GLUE_OUT/$1" f ok=1 out
    if [ -z "$(glue_missing "$dst" "$folder")" ]; then
        local check=()
        for f in train.tsv $(glue_dev_files "$folder"); do [ -f "$dst/$f" ] && check+=("$dst/$f"); done
        if out="$(glue_check "$name" "${check[@]}")"; then
            echo "$folder: in place"; printf '%s\n' "$out"; BUILT+=("$dst (in place)"); return 0
        fi
        echo "$folder: ${out##*$'\n'}: downloading it again" >&2
    fi
    if [ "$folder" = MRPC ]; then
        for f in msr_paraphrase_train.txt mrpc_dev_ids.tsv msr_paraphrase_test.txt; do
            glue_fetch "$f" || { FAILED+=("download glue/$f ($LAST_ERR)"); ok=0; }
        done
        [ $ok = 1 ] || return 1
        f="$GLUE_OUT/.downloads"
        glue_mrpc "$f/msr_paraphrase_train.txt" "$f/mrpc_dev_ids.tsv" "$f/msr_paraphrase_test.txt" \
            && rm -f "$f/msr_paraphrase_train.txt" "$f/mrpc_dev_ids.tsv" "$f/msr_paraphrase_test.txt"
    else
        glue_fetch "$archive" || { FAILED+=("download glue/$archive ($LAST_ERR)"); return 1; }
        glue_from_archive "$GLUE_OUT/.downloads/$archive" "$folder" "$name" \
            && rm -f "$GLUE_OUT/.downloads/$archive"
    fi
}

run_glue() {
    local t spec
    mkdir -p "$GLUE_OUT" || { FAILED+=("glue: cannot create $GLUE_OUT"); return; }
    if [ -n "$FROM" ]; then
        GLUE_FROM="$FROM"; [ -d "$FROM/glue" ] && GLUE_FROM="$FROM/glue"
        echo "creating GLUE datasets from $GLUE_FROM -> $GLUE_OUT"
    else
        echo "creating GLUE datasets (downloading) -> $GLUE_OUT"
    fi
    for t in ${GLUE_TASKS//,/ }; do
        spec="$(glue_spec "$t")"
        # shellcheck disable=SC2086  # three words
        if [ -n "$FROM" ]; then glue_local $spec; else glue_download $spec; fi
    done
    rmdir "$GLUE_OUT/.downloads" 2>/dev/null
    return 0
}

NLG_TASKS=""
DO_GLUE=0
# the NLG tasks and their raw files: the task table, NLG/src/tasks.py
if ! NLG_NAMES=" $("$PY" -m nlg.tasks) "; then
    echo "create_datasets.sh: cannot read the task table (python -m nlg.tasks): run 'pip install -e .' first" >&2
    exit 1
fi
for task in ${TASKS//,/ }; do
    if [ "$task" = glue ]; then DO_GLUE=1
    elif [[ "$NLG_NAMES" == *" $task "* ]]; then NLG_TASKS="$NLG_TASKS $task"
    else
        echo "create_datasets.sh: unknown task '$task' ($(echo $NLG_NAMES | tr ' ' ','),glue)" >&2; exit 2
    fi
done
if [ "$DO_GLUE" = 1 ]; then
    for t in ${GLUE_TASKS//,/ }; do
        if [ -z "$(glue_spec "$t")" ]; then
            echo "create_datasets.sh: unknown GLUE task '$t' (CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE)" >&2
            exit 2
        fi
    done
fi
if [ -n "$FROM" ] && [ ! -d "$FROM" ]; then
    echo "create_datasets.sh: --from $FROM is not a folder" >&2; exit 1
fi

BUILT=()
if [ -n "$NLG_TASKS" ]; then
    # vocabulary for gpt2_encode.py
    if [ -z "$VOCAB" ]; then
        if [ -f "$NLG/vocab/encoder.json" ] && [ -f "$NLG/vocab/vocab.bpe" ]; then VOCAB="$NLG/vocab"
        elif [ -n "$FROM" ] && [ -f "$FROM/vocab/encoder.json" ] && [ -f "$FROM/vocab/vocab.bpe" ]; then VOCAB="$FROM/vocab"
        fi
    fi
    if [ "$FORMATTED_ONLY" = 1 ]; then
        VOCAB="(none: --formatted-only)"
    elif [ -z "$VOCAB" ] || [ ! -f "$VOCAB/encoder.json" ] || [ ! -f "$VOCAB/vocab.bpe" ]; then
        echo "create_datasets.sh: no GPT-2 vocabulary (encoder.json, vocab.bpe) in ${VOCAB:-NLG/vocab}:" \
             "run download_pretrained_checkpoints.sh or pass --vocab DIR (or --formatted-only: the" \
             "text splits alone, for a Hugging Face backbone)" >&2
        exit 1
    fi
    mkdir -p "$OUT"
    echo "raw files: ${FROM:-$OUT (downloading missing ones)}; output: $OUT; vocabulary: $VOCAB"
fi

for task in $NLG_TASKS; do
    echo "creating $task datasets..."
    while read -r split rel; do build "$task" "$split" "$rel"; done < <("$PY" -m nlg.tasks raw "$task")
done
[ "$DO_GLUE" = 1 ] && run_glue

echo
echo "built ${#BUILT[@]} split(s) / GLUE task(s):"
for f in "${BUILT[@]+"${BUILT[@]}"}"; do echo "  $f"; done
if [ ${#MISSING[@]} -gt 0 ]; then
    echo "not in $FROM (skipped):"
    for f in "${MISSING[@]}"; do echo "  $f"; done
fi
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "FAILED:" >&2
    for f in "${FAILED[@]}"; do echo "  $f" >&2; done
    if [ "$UNREACHABLE" != " " ]; then
        echo "unreachable:$UNREACHABLE(offline?); sources tried:$TRIED" >&2
        echo "Offline routes: --from DIR (a folder of the raw files, e.g. a copy of LoRA's" \
             "examples/NLG/data), LORA_DATA_URL_BASE=file:///DIR (GLUE: --from DIR holding glue/ or the task folders)," \
             "or train on random weights with --init_checkpoint random for smoke runs." >&2
    fi
    exit 1
fi
if [ ${#BUILT[@]} -eq 0 ]; then
    echo "create_datasets.sh: nothing was built" >&2; exit 1
fi
echo "script complete!"
