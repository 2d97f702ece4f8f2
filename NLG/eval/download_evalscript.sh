#!/usr/bin/env bash
# Installs the official NLG scorers next to this script, as Microsoft's LoRA repo does:
#   NLG/eval/e2e             tuetschek/e2e-metrics       (E2E: measure_scores.py)
#   NLG/eval/GenerationEval  WebNLG/GenerationEval       (WebNLG / DART: eval.py)
# Both folders are git-ignored. NLG/eval/score.py uses them when they are present and run;
# the built-in scorers (score_e2e.py, score_gen.py) give the same numbers without them.
#
# Known breakages this works around:
#   - GenerationEval's eval.py resets sys.argv at import (for BLEURT's absl flags), so its
#     own command line is lost; it also imports bert_score, BLEURT and razdel unconditionally.
#     We patch those lines (BERTScore/BLEURT are not used here).
#   - GenerationEval's requirements.txt pins nltk==3.5 / tabulate==0.8.7, which no longer
#     install everywhere: we install the few packages eval.py needs, at pinned versions;
#     the scorers themselves are checked out at pinned commits (E2E_COMMIT, GEN_COMMIT).
#   - The METEOR 1.5 tarball (cs.cmu.edu) is often unreachable, and e2e-metrics may lack the
#     jar or its paraphrase table: we take both from the pip package pycocoevalcap.
#   - NLTK's punkt data must be downloaded for word_tokenize.
#
# Usage: bash NLG/eval/download_evalscript.sh [--force]   (--force re-clones)
#        bash NLG/eval/download_evalscript.sh --patch-only PATH/TO/eval.py
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
E2E_DIR="$HERE/e2e"
GEN_DIR="$HERE/GenerationEval"
E2E_URL="${E2E_METRICS_URL:-https://github.com/tuetschek/e2e-metrics}"
GEN_URL="${GENERATIONEVAL_URL:-https://github.com/WebNLG/GenerationEval.git}"
# Pinned: the scorers' commits (a clone is checked out at exactly these), the sha256 of the BLEU
# script GenerationEval ships (a copy fetched from Moses must match it) and the packages' versions.
E2E_COMMIT="${E2E_METRICS_COMMIT:-1b9c4d87fd0bbb171ea966741cdc012588581ed4}"
GEN_COMMIT="${GENERATIONEVAL_COMMIT:-80678494f9ae49e8984d78d5efdec482bd37fc1d}"
MOSES_BLEU_URL="https://raw.githubusercontent.com/moses-smt/mosesdecoder/master/scripts/generic/multi-bleu-detok.perl"
MOSES_BLEU_SHA256=fccaf9d09d0ad6667b34c8bf39446cb9769944c28ac6227f81666e6364184498
E2E_PACKAGES=(matplotlib==3.11.2 scikit-image==0.26.0 future==1.0.0)   # its requirements.txt, pinned
GEN_PACKAGES=(nltk==3.10.4 pyter3==0.3 tabulate==0.10.0 razdel==0.5.0)
PYTHON="${PYTHON:-python}"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

die() { echo "download_evalscript.sh: error: $*" >&2; exit 1; }
say() { echo "download_evalscript.sh: $*"; }

patch_generationeval() {  # patch_generationeval EVAL_PY
    say "patching $1 (argv reset, optional BERTScore/BLEURT/razdel imports)"
    "$PYTHON" - "$1" <<'PY' || die "could not patch $1"
import re, sys
path = sys.argv[1]
src = open(path, encoding="utf-8").read()
orig = src
# the reset wipes -R/-H/... before argparse sees them
src = re.sub(r"(?m)^sys\.argv\s*=\s*sys\.argv\[:1\]\s*$", "# (argv reset removed by download_evalscript.sh)", src)
if not re.search(r"(?m)^import sys\b", src):
    src = "import sys\n" + src
for mod_line in (r"from bert_score import score", r"from metrics\.bleurt\.bleurt import score as bleurt_score",
                 r"from razdel import tokenize"):
    src = re.sub(r"(?m)^(%s)\s*$" % mod_line,
                 lambda m: "try:\n    %s\nexcept ImportError:  # optional, patched by download_evalscript.sh\n    pass" % m.group(1),
                 src)
if src != orig:
    open(path, "w", encoding="utf-8").write(src)
PY
}

if [[ "${1:-}" == "--patch-only" ]]; then  # patch an existing eval.py, nothing else
    [[ -f "${2:-}" ]] || die "--patch-only needs the path of GenerationEval's eval.py"
    patch_generationeval "$2"
    exit 0
fi

command -v git >/dev/null 2>&1 || die "git is not installed"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=...)"
command -v perl >/dev/null 2>&1 || say "warning: perl not found: GenerationEval's BLEU needs it"
command -v java >/dev/null 2>&1 || say "warning: java not found: METEOR (and e2e-metrics' tokenizer) need it"

clone() {  # clone URL DIR COMMIT: DIR holds exactly COMMIT of URL
    local url="$1" dir="$2" commit="$3"
    if [[ -d "$dir" && $FORCE -eq 1 ]]; then rm -rf "$dir"; fi
    if [[ -d "$dir/.git" ]]; then
        local head; head="$(git -C "$dir" rev-parse HEAD 2>/dev/null || true)"
        [[ "$head" = "$commit" ]] || die "$dir is at ${head:-an unknown commit}, not the pinned $commit: use --force to re-clone"
        say "$dir already present at the pinned commit"
        return 0
    fi
    [[ -e "$dir" ]] && die "$dir exists but is not a git clone; remove it or use --force"
    say "cloning $url at $commit -> $dir"
    if ! { git init -q "$dir" && git -C "$dir" fetch -q --depth 1 "$url" "$commit" \
           && git -C "$dir" checkout -q --detach FETCH_HEAD; }; then
        rm -rf "$dir"
        die "could not clone $url at $commit (no network access to GitHub?). The built-in scorers
    NLG/eval/score_e2e.py and NLG/eval/score_gen.py need no download and give the same numbers."
    fi
    [[ "$(git -C "$dir" rev-parse HEAD)" = "$commit" ]] || { rm -rf "$dir"; die "$url: got another commit than $commit"; }
}

# pycocoevalcap ships meteor-1.5.jar, data/paraphrase-en.gz and the Stanford tokenizer jar
COCO_DIR="$("$PYTHON" - <<'PY' || true
import importlib.util
spec = importlib.util.find_spec("pycocoevalcap")
print(list(spec.submodule_search_locations)[0] if spec else "")
PY
)"
if [[ -z "$COCO_DIR" ]]; then
    say "installing pycocoevalcap (for the METEOR 1.5 jar and paraphrase table)"
    "$PYTHON" -m pip install pycocoevalcap==1.2 || die "pip install pycocoevalcap==1.2 failed"
    COCO_DIR="$("$PYTHON" -c 'import importlib.util as u; print(list(u.find_spec("pycocoevalcap").submodule_search_locations)[0])')"
fi
[[ -f "$COCO_DIR/meteor/meteor-1.5.jar" && -f "$COCO_DIR/meteor/data/paraphrase-en.gz" ]] \
    || die "pycocoevalcap at $COCO_DIR lacks meteor/meteor-1.5.jar or meteor/data/paraphrase-en.gz"

fill() {  # fill SRC DST: copy SRC to DST unless DST is a real, non-empty file
    local src="$1" dst="$2"
    if [[ ! -s "$dst" ]] || grep -qa "git-lfs" <(head -c 200 "$dst"); then
        mkdir -p "$(dirname "$dst")"
        cp "$src" "$dst"
        say "  filled $dst from pycocoevalcap"
    fi
}

# ---------------------------------------------------------------- e2e-metrics
say "== e2e-metrics"
clone "$E2E_URL" "$E2E_DIR" "$E2E_COMMIT"
[[ -f "$E2E_DIR/measure_scores.py" ]] || die "$E2E_DIR has no measure_scores.py"
if [[ -f "$E2E_DIR/requirements.txt" ]]; then
    "$PYTHON" -m pip install "${E2E_PACKAGES[@]}" \
        || die "pip install ${E2E_PACKAGES[*]} failed"
fi
fill "$COCO_DIR/meteor/meteor-1.5.jar" "$E2E_DIR/pycocoevalcap/meteor/meteor-1.5.jar"
fill "$COCO_DIR/meteor/data/paraphrase-en.gz" "$E2E_DIR/pycocoevalcap/meteor/data/paraphrase-en.gz"
fill "$COCO_DIR/tokenizer/stanford-corenlp-3.4.1.jar" \
    "$E2E_DIR/pycocoevalcap/tokenizer/stanford-corenlp-3.4.1.jar"

# ---------------------------------------------------------------- GenerationEval
say "== GenerationEval"
clone "$GEN_URL" "$GEN_DIR" "$GEN_COMMIT"
[[ -f "$GEN_DIR/eval.py" ]] || die "$GEN_DIR has no eval.py"
say "installing eval.py's dependencies without the old pins"
"$PYTHON" -m pip install "${GEN_PACKAGES[@]}" || die "pip install ${GEN_PACKAGES[*]} failed"
"$PYTHON" - <<'PY' || die "could not download NLTK's punkt tokenizer data"
import nltk
ok = False
for pkg in ("punkt", "punkt_tab"):  # newer NLTK reads punkt_tab
    ok = nltk.download(pkg, quiet=True) or ok
raise SystemExit(0 if ok else 1)
PY
rm -rf "$GEN_DIR/data/en" "$GEN_DIR/data/ru"
fill "$COCO_DIR/meteor/meteor-1.5.jar" "$GEN_DIR/metrics/meteor-1.5/meteor-1.5.jar"
fill "$COCO_DIR/meteor/data/paraphrase-en.gz" "$GEN_DIR/metrics/meteor-1.5/data/paraphrase-en.gz"
if [[ ! -s "$GEN_DIR/metrics/multi-bleu-detok.perl" ]]; then
    say "fetching multi-bleu-detok.perl from Moses"
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL "$MOSES_BLEU_URL" -o "$GEN_DIR/metrics/multi-bleu-detok.perl" \
            || die "could not download $MOSES_BLEU_URL"
        got="$(sha256sum "$GEN_DIR/metrics/multi-bleu-detok.perl" | cut -d' ' -f1)"
        if [[ "$got" != "$MOSES_BLEU_SHA256" ]]; then
            rm -f "$GEN_DIR/metrics/multi-bleu-detok.perl"
            die "$MOSES_BLEU_URL has sha256 $got, not the pinned $MOSES_BLEU_SHA256: not used"
        fi
    else
        die "$GEN_DIR/metrics/multi-bleu-detok.perl missing and curl not installed"
    fi
fi

patch_generationeval "$GEN_DIR/eval.py"

say "checking the installs"
( cd "$E2E_DIR" && "$PYTHON" measure_scores.py -h >/dev/null ) \
    || die "$E2E_DIR/measure_scores.py -h fails: see the error above"
( cd "$GEN_DIR" && "$PYTHON" eval.py -h >/dev/null ) \
    || die "$GEN_DIR/eval.py -h fails: see the error above"
say "done: NLG/eval/score.py will now use the official scorers (--official auto)"
