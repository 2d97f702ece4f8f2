#!/usr/bin/env bash
# Fetch the pretrained checkpoints and vocabularies:
#   NLG/pretrained_checkpoints/gpt2{,-medium,-large}-pytorch_model.bin   (names as in Microsoft's LoRA repo)
#   NLG/vocab/encoder.json, NLG/vocab/vocab.bpe
#   NLU/pretrained_checkpoints/roberta-{base,large}/{pytorch_model.bin,vocab.json,merges.txt,config.json}
#                      (Hugging Face's FacebookAI/roberta-{base,large}; only when asked for, see --models)
#
#   bash download_pretrained_checkpoints.sh [options]
#   bash download_pretrained_checkpoints.sh --models nlu          RoBERTa only (it has its own vocabulary)
#   bash download_pretrained_checkpoints.sh --models all          everything
#
# Options:
#   --models LIST      comma-separated subset of gpt2,gpt2-medium,gpt2-large,roberta-base,roberta-large,
#                      or the groups nlg (the three GPT-2), nlu (the two RoBERTa), all
#                      (default: nlg, the three GPT-2 checkpoints)
#   --no-vocab         skip the GPT-2 vocabulary (fetched when a GPT-2 model is, or with --vocab-only)
#   --vocab-only       only the GPT-2 vocabulary
#   --vocab-from DIR   copy encoder.json and vocab.bpe from a local folder instead of downloading
#   --roberta-from DIR copy the RoBERTa files from a local folder instead of downloading: DIR/<model>/
#                      (e.g. DIR/roberta-base/pytorch_model.bin), or DIR itself for a single model;
#                      config.json may be absent there
#   --out DIR          GPT-2 checkpoint folder (default NLG/pretrained_checkpoints)
#   --vocab-out DIR    vocabulary folder (default NLG/vocab)
#   --nlu-out DIR      RoBERTa folder, one subfolder per model (default NLU/pretrained_checkpoints)
#
# Every file is checked against a sha256 before it takes its final name: one pinned below (or given
# in LORA_SHA256="NAME=SHA256 ..."); else the sha256 the official host (Hugging Face) publishes for
# that exact file (its X-Linked-Etag header, the git-lfs object id), asked of the official host even
# when the bytes come from a mirror (LORA_OFFICIAL_HASH_BASE="" does not ask); else one recorded by
# an earlier run in <out>/checksums.sha256.
# With none of these a file is refused, unless LORA_TRUST_FIRST_DOWNLOAD=1 records the first
# download's hash (later ones must match it). Downloads resume a kept .part file; a resumed file
# that fails the check is fetched once more from the start. Files already in place are checked too.
# Local copies (--vocab-from, --roberta-from) follow the same rule.
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

hf_published_sha256() {  # sha256 that Hugging Face publishes for an LFS file (X-Linked-Etag), or nothing
    case "$1" in https://huggingface.co/*|"${OFFICIAL_BASE:-//}"/*) ;; *) return 0 ;; esac
    command -v curl >/dev/null 2>&1 || return 0
    curl -sI --connect-timeout 20 "$1" 2>/dev/null | tr -d '\r' \
        | awk 'tolower($1) == "x-linked-etag:" { gsub(/"/, "", $2); print $2; exit }' \
        | grep -E '^[0-9a-f]{64}$' || true
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
        if [ "$(sha256_of "$dest")" = "$want" ]; then
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
                if [ ! -s "$part" ] || [ -z "$expect" ] || [ "$(sha256_of "$part")" != "$expect" ]; then
                    LAST_ERR="download failed: $url (partial file kept as $part, rerun to resume)"
                    [ -s "$part" ] || { rm -f "$part"; LAST_ERR="download failed: $url"; }
                    echo "  $LAST_ERR" >&2
                    continue 2
                fi
            fi
            got="$(sha256_of "$part")"
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
add_gpt() { case " $GPT_MODELS " in *" $1 "*) ;; *) GPT_MODELS="${GPT_MODELS:+$GPT_MODELS }$1" ;; esac; }
add_roberta() { case " $ROBERTA_MODELS " in *" $1 "*) ;; *) ROBERTA_MODELS="${ROBERTA_MODELS:+$ROBERTA_MODELS }$1" ;; esac; }
for m in ${MODELS//,/ }; do
    case "$m" in
        nlg) for x in gpt2 gpt2-medium gpt2-large; do add_gpt "$x"; done ;;
        nlu) for x in roberta-base roberta-large; do add_roberta "$x"; done ;;
        all) for x in gpt2 gpt2-medium gpt2-large; do add_gpt "$x"; done
             for x in roberta-base roberta-large; do add_roberta "$x"; done ;;
        gpt2|gpt2-medium|gpt2-large) add_gpt "$m" ;;
        roberta-base|roberta-large) add_roberta "$m" ;;
        *) FAILED+=("$m: unknown model (gpt2, gpt2-medium, gpt2-large, roberta-base, roberta-large; nlg, nlu, all)") ;;
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
             "--roberta-from DIR, or train from a random backbone with --init_checkpoint random" \
             "(run_task.sh; smoke runs and tests)." >&2
    fi
    exit 1
fi
echo "script complete!"
