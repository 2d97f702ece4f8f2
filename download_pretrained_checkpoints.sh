#!/usr/bin/env bash
# Fetch the pretrained GPT-2 checkpoints and the GPT-2 vocabulary:
#   NLG/pretrained_checkpoints/gpt2{,-medium,-large}-pytorch_model.bin   (names as in Microsoft's LoRA repo)
#   NLG/vocab/encoder.json, NLG/vocab/vocab.bpe
#
#   bash download_pretrained_checkpoints.sh [options]
#
# Options:
#   --models LIST      comma-separated subset of gpt2,gpt2-medium,gpt2-large (default: all three)
#   --no-vocab         skip the vocabulary
#   --vocab-only       only the vocabulary
#   --vocab-from DIR   copy encoder.json and vocab.bpe from a local folder instead of downloading
#   --out DIR          checkpoint folder (default NLG/pretrained_checkpoints)
#   --vocab-out DIR    vocabulary folder (default NLG/vocab)
#
# Downloads resume where they stopped (curl -C - / wget -c on a .part file kept between runs) and are
# checked against a sha256 before they take their final name. Hashes: pinned below where known;
# otherwise, for Hugging Face URLs, the sha256 Hugging Face publishes for the file (its X-Linked-Etag
# header, the git-lfs object id; every mirror's file must then match it); otherwise the first
# download's hash is recorded in <out>/checksums.sha256 and later downloads must match it.
# Files already in place are checked too.
# LORA_CKPT_URL_BASE / LORA_VOCAB_URL_BASE replace the download bases (a folder holding
# <model>-pytorch_model.bin / encoder.json + vocab.bpe; any curl/wget URL, file:// included).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NLG="$ROOT/NLG"
MODELS="gpt2,gpt2-medium,gpt2-large"
DO_VOCAB=1
DO_MODELS=1
VOCAB_FROM=""
OUT="$NLG/pretrained_checkpoints"
VOCAB_OUT="$NLG/vocab"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --models) MODELS="${2:?--models needs a list}"; shift 2 ;;
        --no-vocab) DO_VOCAB=0; shift ;;
        --vocab-only) DO_MODELS=0; shift ;;
        --vocab-from) VOCAB_FROM="${2:?--vocab-from needs a folder}"; shift 2 ;;
        --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
        --vocab-out) VOCAB_OUT="${2:?--vocab-out needs a folder}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "download_pretrained_checkpoints.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

# Pinned sha256 (empty: not known here, see the header for what is used instead).
known_sha256() {
    case "$1" in
        # Hugging Face's gpt2 pytorch_model.bin (548,118,077 bytes), the file the LoRA repo's S3 link served
        gpt2-pytorch_model.bin) echo 7c5d3f4b8b76583b422fcb9189ad6c89d5d97a094541ce8932dce3ecabde1421 ;;
        # OpenAI's GPT-2 vocabulary (the same bytes as Hugging Face's vocab.json / merges.txt)
        encoder.json) echo 196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783 ;;
        vocab.bpe) echo 1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5 ;;
        *) echo "" ;;
    esac
}

model_urls() {  # mirrors for <model>-pytorch_model.bin, best first
    local m="$1"
    if [ -n "${LORA_CKPT_URL_BASE:-}" ]; then echo "$LORA_CKPT_URL_BASE/$m-pytorch_model.bin"; return; fi
    echo "https://huggingface.co/openai-community/$m/resolve/main/pytorch_model.bin"
    echo "https://huggingface.co/$m/resolve/main/pytorch_model.bin"
    echo "https://s3.amazonaws.com/models.huggingface.co/bert/$m-pytorch_model.bin"  # the LoRA repo's link
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
    case "$1" in https://huggingface.co/*) ;; *) return 0 ;; esac
    command -v curl >/dev/null 2>&1 || return 0
    curl -sI --connect-timeout 20 "$1" 2>/dev/null | tr -d '\r' \
        | awk 'tolower($1) == "x-linked-etag:" { gsub(/"/, "", $2); print $2; exit }' \
        | grep -E '^[0-9a-f]{64}$' || true
}

fetch() {  # resumable download of URL into DEST
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

OK=()
FAILED=()
LAST_ERR=""

# get NAME DEST_DIR URL...: bring DEST_DIR/NAME in place, verified
get() {
    local name="$1" dir="$2"; shift 2
    local dest="$dir/$name" part="$dir/$name.part" want got url
    mkdir -p "$dir"
    want="$(known_sha256 "$name")"
    [ -n "$want" ] || want="$(recorded_sha256 "$dir" "$name")"
    if [ -z "$want" ]; then
        # a hash published by one mirror holds for all of them: the others must not bypass it
        for url in "$@"; do want="$(hf_published_sha256 "$url")"; [ -n "$want" ] && break; done
    fi
    if [ -f "$dest" ]; then
        if [ -z "$want" ]; then
            echo "$name: present (no sha256 known to check it against)"; OK+=("$dest"); return 0
        fi
        if [ "$(sha256_of "$dest")" = "$want" ]; then
            echo "$name: present, sha256 ok"; OK+=("$dest"); return 0
        fi
        echo "$name: present but its sha256 is not $want: downloading it again" >&2
    fi
    LAST_ERR="no source"
    for url in "$@"; do
        local expect="$want"
        echo "$name: downloading $url"
        if ! fetch "$url" "$part"; then
            # a finished .part makes a resumed request fail (nothing left to fetch): check it below
            if [ ! -s "$part" ] || [ -z "$expect" ] || [ "$(sha256_of "$part")" != "$expect" ]; then
                LAST_ERR="download failed: $url (partial file kept as $part, rerun to resume)"
                [ -s "$part" ] || { rm -f "$part"; LAST_ERR="download failed: $url"; }
                echo "  $LAST_ERR" >&2
                continue
            fi
        fi
        got="$(sha256_of "$part")"
        if [ -n "$expect" ] && [ "$got" != "$expect" ]; then
            LAST_ERR="sha256 mismatch from $url: got $got, expected $expect (download removed)"
            echo "  $LAST_ERR" >&2; rm -f "$part"; continue
        fi
        if [ -z "$expect" ]; then
            echo "$got  $name" >> "$dir/checksums.sha256"
            echo "  no published sha256 for $name: recorded $got in $dir/checksums.sha256"
        else
            echo "  sha256 ok"
        fi
        mv "$part" "$dest"
        OK+=("$dest")
        return 0
    done
    FAILED+=("$name: $LAST_ERR")
    return 1
}

if [ "$DO_VOCAB" = 1 ]; then
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

if [ "$DO_MODELS" = 1 ]; then
    echo "downloading pretrained model checkpoints -> $OUT"
    for m in ${MODELS//,/ }; do
        case "$m" in
            gpt2|gpt2-medium|gpt2-large) ;;
            *) FAILED+=("$m: unknown model (gpt2, gpt2-medium, gpt2-large)"); continue ;;
        esac
        IFS=$'\n' read -r -d '' -a urls < <(model_urls "$m"; printf '\0')
        get "$m-pytorch_model.bin" "$OUT" "${urls[@]}"
    done
fi

echo
if [ ${#OK[@]} -gt 0 ]; then
    echo "in place:"
    for f in "${OK[@]}"; do echo "  $f"; done
fi
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "FAILED:" >&2
    for f in "${FAILED[@]}"; do echo "  $f" >&2; done
    exit 1
fi
echo "script complete!"
