#!/usr/bin/env python
"""The pipeline's score step: official scorers when installed, the built-in ones otherwise.

    python NLG/eval/score.py --task e2e --ref REF_FILE --hyp PRED_FILE [--json OUT.json] [--official auto|yes|no]
    python NLG/eval/score.py --task webnlg|dart --ref REF_PREFIX --hyp HYP_FILE --nr N
        [--json OUT.json] [--official auto|yes|no]

Official means NLG/eval/e2e/measure_scores.py (run as `measure_scores.py -p`) or
NLG/eval/GenerationEval/eval.py (`-m bleu,meteor,ter,chrf++`), installed by
download_evalscript.sh. `auto` uses them when they are installed and run, and says why when it
falls back; `yes` fails without them; `no` always uses the built-in scorers. The first line
says which scorer ran, then come `NAME: value` lines; --json writes the scores and
"scorer": "official" | "builtin".
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from metrics.e2e import score_e2e  # noqa: E402
from metrics.gen import METRICS, score_gen  # noqa: E402
from metrics.readers import (ScoreInputError, load_e2e, load_multi_ref,  # noqa: E402
                             reference_paths)
from metrics.report import E2E_DECIMALS, GEN_DECIMALS, format_lines  # noqa: E402
from nlg.tasks import TASKS  # noqa: E402
from traincore.cli import setup_parser, run  # noqa: E402
from traincore.progress import Progress  # noqa: E402

E2E_OFFICIAL = HERE / "e2e" / "measure_scores.py"
GEN_OFFICIAL = HERE / "GenerationEval" / "eval.py"
E2E_NAMES = ["BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"]
# eval.py's table headers -> our keys
GEN_HEADERS = {"BLEU": "BLEU", "METEOR": "METEOR", "TER": "TER", "chrF++": "chrF++"}


class OfficialFailed(RuntimeError):
    pass


def run_official_e2e(ref, hyp):
    cmd = [sys.executable, str(E2E_OFFICIAL), "-p", str(Path(ref).resolve()),
           str(Path(hyp).resolve())]
    res = subprocess.run(cmd, cwd=E2E_OFFICIAL.parent, capture_output=True, text=True)
    scores = {}
    for name in E2E_NAMES:
        m = re.search(rf"^{name}: ([-0-9.eE+]+)\s*$", res.stdout, re.M)
        if m:
            scores[name] = float(m.group(1))
    if res.returncode != 0 or len(scores) != len(E2E_NAMES):
        raise OfficialFailed(f"{E2E_OFFICIAL} exited with {res.returncode}: "
                             f"{(res.stderr or res.stdout).strip()[-800:]}")
    return scores


def _copy_without_final_newline(src, dst):
    # eval.py splits on '\n': a final newline would be scored as an extra empty segment
    data = Path(src).read_bytes()
    dst.write_bytes(data[:-1] if data.endswith(b"\n") else data)


def run_official_gen(ref_prefix, hyp, num_refs):
    with tempfile.TemporaryDirectory(prefix="geneval-") as tmp:
        tmp = Path(tmp)
        for i, p in enumerate(reference_paths(ref_prefix, num_refs)):
            _copy_without_final_newline(p, tmp / (f"reference{i}" if num_refs > 1 else "reference"))
        _copy_without_final_newline(hyp, tmp / "hypothesis")
        cmd = [sys.executable, str(GEN_OFFICIAL), "-R", str(tmp / "reference"),
               "-H", str(tmp / "hypothesis"), "-nr", str(num_refs), "-m", ",".join(METRICS)]
        res = subprocess.run(cmd, cwd=GEN_OFFICIAL.parent, capture_output=True, text=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    # tabulate prints: header line, dashes, values
    scores = {}
    for i, ln in enumerate(lines[:-2]):
        if set(lines[i + 1].split()) == {"-" * len(t) for t in lines[i + 1].split()}:
            heads = re.split(r"\s{2,}", ln.strip())
            vals = lines[i + 2].split()
            if len(heads) == len(vals):
                scores = {GEN_HEADERS[h]: float(v) for h, v in zip(heads, vals)
                          if h in GEN_HEADERS}
    if res.returncode != 0 or set(scores) != set(GEN_HEADERS.values()):
        raise OfficialFailed(f"{GEN_OFFICIAL} exited with {res.returncode}: "
                             f"{(res.stderr or res.stdout).strip()[-800:]}")
    return scores


def _one_file(args):
    """E2E's layout (one reference file, e2e-metrics) rather than GenerationEval's."""
    return TASKS[args.task].references == "e2e"


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--task", required=True, choices=list(TASKS), help="the task (NLG/src/tasks.py)")
    ap.add_argument("--ref", required=True,
                    help="E2E: reference file; WebNLG/DART: reference prefix (prefix0..N-1)")
    ap.add_argument("--hyp", required=True, help="prediction file, one per line")
    ap.add_argument("--nr", type=int, default=None, help="WebNLG/DART: number of references")
    ap.add_argument("--json", default=None, help="also write the scores to this JSON file")
    ap.add_argument("--official", choices=["auto", "yes", "no"], default="auto")
    ap.add_argument("--no-meteor", action="store_true",
                    help="skip METEOR (no Java start-up); implies the built-in scorers, since the "
                         "official ones always run it")
    setup_parser(ap)
    return ap


class _Fail(Exception):
    """An error already worded for the user, with the exit status it gets."""

    def __init__(self, msg, status):
        super().__init__(msg)
        self.status = status


def _try_official(args):
    """(scores, notes) of the official scorer, or None where the built-in one is to run."""
    official = E2E_OFFICIAL if _one_file(args) else GEN_OFFICIAL
    if args.official == "no":
        return None
    if not official.is_file():
        why = f"{official} not installed (run NLG/eval/download_evalscript.sh)"
        if args.official == "yes":
            raise _Fail(f"--official yes but {why}", 1)
        print(f"note: official scorer not used: {why}", file=sys.stderr)
        return None
    try:
        if _one_file(args):
            return run_official_e2e(args.ref, args.hyp), {}
        return run_official_gen(args.ref, args.hyp, args.nr), {}
    except OfficialFailed as e:
        if args.official == "yes":
            raise _Fail(str(e), 1) from None
        print(f"note: official scorer failed, using the built-in one: {e}", file=sys.stderr)
        return None


def _builtin(args, refs, hyps):
    """(scores, notes, the scorer file) of the built-in scorers."""
    if _one_file(args):
        with Progress(5, f"score {args.task}", "metrics") as bar:
            scores, notes = score_e2e(refs, hyps, meteor=not args.no_meteor,
                                      step=lambda name: bar.update())
        return scores, notes, HERE / "score_e2e.py"
    metrics = ["bleu", "ter", "chrf++"] if args.no_meteor else list(METRICS)
    try:
        with Progress(len(metrics), f"score {args.task}", "metrics") as bar:
            scores, notes = score_gen(refs, hyps, args.nr, metrics=metrics,
                                      step=lambda name: bar.update())
        if args.no_meteor:
            scores = {"BLEU": scores["BLEU"], "METEOR": None, "TER": scores["TER"],
                      "chrF++": scores["chrF++"]}
            notes["METEOR"] = "--no-meteor given"
    except ValueError as e:
        raise _Fail(f"{args.hyp}: {e}", 2) from None
    return scores, notes, HERE / "score_gen.py"


def _write_json(path, scores, notes, scorer, task=None):
    obj = dict(scores)
    unavailable = {k: v for k, v in (notes or {}).items() if scores.get(k) is None}
    if unavailable:
        obj["unavailable"] = unavailable
    obj["scorer"] = scorer
    if task:
        obj["task"] = task      # what the report groups the run under
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=1) + "\n")


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    if not _one_file(args) and args.nr is None:
        ap.error(f"--task {args.task} needs --nr")
    if args.no_meteor:
        if args.official == "yes":
            ap.error("--no-meteor needs the built-in scorers; the official ones always run METEOR")
        args.official = "no"
    try:
        # read the inputs first: bad files get our clear error whichever scorer runs
        if _one_file(args):
            refs, hyps = load_e2e(args.ref, args.hyp)
        else:
            refs, hyps = load_multi_ref(args.ref, args.hyp, args.nr)
        found = _try_official(args)
        if found is not None:
            (scores, notes), scorer = found, "official"
            print(f"scorer: official ({E2E_OFFICIAL if _one_file(args) else GEN_OFFICIAL})")
        else:
            scores, notes, where = _builtin(args, refs, hyps)
            scorer = "builtin"
            print(f"scorer: built-in ({where})")
    except ScoreInputError as e:
        print(f"{Path(__file__).name}: {e}", file=sys.stderr)
        return 2
    except _Fail as e:
        print(f"{Path(__file__).name}: {e}", file=sys.stderr)
        return e.status
    decimals = E2E_DECIMALS if _one_file(args) else GEN_DECIMALS
    print("\n".join(format_lines(scores, notes, decimals)))
    if args.json:
        _write_json(args.json, scores, notes, scorer, args.task)
    return 0


if __name__ == "__main__":
    sys.exit(run("score.py", main))
