#!/usr/bin/env python
"""E2E scores (BLEU, NIST, METEOR, ROUGE_L, CIDEr) with the numbers of tuetschek/e2e-metrics.

    python NLG/eval/score_e2e.py REF PRED [-p] [--json] [--no-meteor]

REF: reference blocks separated by a blank line (or one reference per line), or a CSV/TSV
with source and reference columns; PRED: one prediction per line (or CSV/TSV), as
measure_scores.py reads them. BLEU and NIST are the Python (`-p`) implementation the LoRA
README uses; METEOR runs the official METEOR 1.5 jar (needs Java) and is reported as
unavailable, with the reason, when it cannot run.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from metrics.e2e import score_e2e  # noqa: E402
from metrics.readers import ScoreInputError, load_e2e  # noqa: E402
from traincore.cli import setup_parser, run  # noqa: E402
from metrics.report import E2E_DECIMALS, format_lines, to_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ref_file", help="references: blank-line-separated blocks, or CSV/TSV")
    ap.add_argument("sys_file", help="system outputs: one per line, or CSV/TSV")
    ap.add_argument("-p", "--python", action="store_true",
                    help="accepted for measure_scores.py compatibility: BLEU/NIST are always "
                         "the Python implementation")
    ap.add_argument("--json", action="store_true",
                    help="print one JSON object with every score at full precision")
    ap.add_argument("--no-meteor", action="store_true", help="skip METEOR (no Java needed)")
    setup_parser(ap)
    args = ap.parse_args(argv)
    try:
        refs, hyps = load_e2e(args.ref_file, args.sys_file)
    except ScoreInputError as e:
        print(f"{os.path.basename(__file__)}: {e}", file=sys.stderr)
        return 2
    scores, notes = score_e2e(refs, hyps, meteor=not args.no_meteor)
    if args.json:
        print(to_json(scores, notes))
    else:
        print("SCORES:\n==============")
        print("\n".join(format_lines(scores, notes, E2E_DECIMALS)))
    return 0


if __name__ == "__main__":
    sys.exit(run("score_e2e.py", main))
