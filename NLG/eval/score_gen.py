#!/usr/bin/env python
"""WebNLG/DART scores (BLEU, METEOR, TER, chrF++) with the numbers of WebNLG GenerationEval.

    python NLG/eval/score_gen.py -R REF_PREFIX -H HYP_FILE -nr N -m bleu,meteor,ter,chrf++ [--json]

References are REF_PREFIX0 .. REF_PREFIX{N-1} (REF_PREFIX itself when N is 1), one line per
hypothesis line. A final newline ends the last line; it is not an extra empty segment (the
official script needs files without it). BLEU is multi-bleu-detok.perl's (0-100), METEOR the
official METEOR 1.5 jar (needs Java; otherwise reported unavailable with the reason), TER
pyter's on NLTK-tokenized text, chrF++ Popović's script (0-1 scale, as eval.py returns it).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from metrics.gen import METRICS, parse_metrics, score_gen  # noqa: E402
from metrics.readers import ScoreInputError, load_multi_ref  # noqa: E402
from traincore.cli import setup_parser, run  # noqa: E402
from metrics.report import GEN_DECIMALS, format_lines, to_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-R", "--reference", required=True, help="reference file prefix")
    ap.add_argument("-H", "--hypothesis", required=True, help="hypothesis file")
    ap.add_argument("-nr", "--num_refs", type=int, default=4, help="number of references")
    ap.add_argument("-m", "--metrics", default=",".join(METRICS),
                    help="comma-separated subset of " + ",".join(METRICS))
    ap.add_argument("-lng", "--language", default="en", help="only en is supported")
    ap.add_argument("-nc", "--ncorder", type=int, default=6, help="chrF character n-gram order")
    ap.add_argument("-nw", "--nworder", type=int, default=2, help="chrF word n-gram order")
    ap.add_argument("-b", "--beta", type=float, default=2.0, help="chrF beta")
    ap.add_argument("--json", action="store_true",
                    help="print one JSON object with every score at full precision")
    setup_parser(ap)
    args = ap.parse_args(argv)
    if args.language != "en":
        ap.error(f"-lng {args.language}: only English is supported by the built-in scorer")
    try:
        metrics = parse_metrics(args.metrics)
        if args.num_refs < 1:
            raise ScoreInputError(f"-nr must be >= 1, got {args.num_refs}")
        refs, hyps = load_multi_ref(args.reference, args.hypothesis, args.num_refs)
    except (ScoreInputError, ValueError) as e:
        print(f"{os.path.basename(__file__)}: {e}", file=sys.stderr)
        return 2
    try:
        scores, notes = score_gen(refs, hyps, args.num_refs, metrics,
                                  args.nworder, args.ncorder, args.beta)
    except ValueError as e:
        print(f"{os.path.basename(__file__)}: {args.hypothesis}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(to_json(scores, notes))
    else:
        print("\n".join(format_lines(scores, notes, GEN_DECIMALS)))
    return 0


if __name__ == "__main__":
    sys.exit(run("score_gen.py", main))
