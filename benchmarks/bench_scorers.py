#!/usr/bin/env python
"""Timing of the built-in scorers.

E2E: an input the size of the E2E test set (630 contexts, 4,693 references) built from
../shared/data/e2e/valid.txt by repetition; BLEU, NIST, ROUGE_L and CIDEr (METEOR is the
official jar: add --meteor to time it too). WebNLG: the metric fixture (814 segments, 6
references) when ../shared/fixtures is there; with --pyter, the original pyter TER on it for
comparison (slow).

    python benchmarks/bench_scorers.py [--shared ../shared] [--meteor] [--pyter]
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "NLG" / "eval"))

from metrics.bleu import e2e_bleu  # noqa: E402
from metrics.cider import cider  # noqa: E402
from metrics.nist import nist  # noqa: E402
from metrics.ptb import coco_tokenize  # noqa: E402
from metrics.rouge import rouge_l  # noqa: E402

N_CONTEXTS, N_REFS = 630, 4693


def e2e_test_sized(valid_txt):
    groups, last = [], None
    for line in Path(valid_txt).read_text(encoding="utf-8").splitlines():
        if "||" not in line:
            continue
        mr, ref = line.split("||", 1)
        if mr != last:
            groups.append([])
            last = mr
        groups[-1].append(ref.strip())
    refs, hyps = [], []
    extra = N_REFS - 7 * N_CONTEXTS  # this many contexts get 8 references, the rest 7
    for i in range(N_CONTEXTS):
        g = groups[i % len(groups)]
        k = 8 if i < extra else 7
        refs.append([g[(j + 1) % len(g)] for j in range(k)])
        words = g[0].split()
        hyps.append(" ".join(w for t, w in enumerate(words) if t % 6 != 5))  # a perturbed ref
    return refs, hyps


def timed(label, fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    dt = time.perf_counter() - t
    shown = round(out, 6) if isinstance(out, float) else out if isinstance(out, dict) else ""
    print(f"  {label:<28s} {dt:7.3f} s   {shown}")
    return out, dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--meteor", action="store_true")
    ap.add_argument("--pyter", action="store_true")
    args = ap.parse_args()
    shared = Path(args.shared)

    refs, hyps = e2e_test_sized(shared / "data" / "e2e" / "valid.txt")
    print(f"E2E test-sized input: {len(hyps)} contexts, {sum(map(len, refs))} references")
    t0 = time.perf_counter()
    timed("BLEU (pymteval)", e2e_bleu, refs, hyps)
    timed("NIST (pymteval)", nist, refs, hyps)
    (refs_t, hyps_t), _ = timed("PTB tokenization", lambda: (
        [[coco_tokenize(r) for r in rs] for rs in refs], [coco_tokenize(h) for h in hyps]))
    timed("ROUGE_L", rouge_l, refs_t, hyps_t)
    timed("CIDEr", cider, refs_t, hyps_t)
    print(f"  {'total without METEOR':<28s} {time.perf_counter() - t0:7.3f} s")
    if args.meteor:
        from metrics.meteor import meteor_coco
        timed("METEOR (jar)", meteor_coco, refs_t, hyps_t)

    fx = shared / "fixtures" / "metrics" / "webnlg_dev"
    if fx.is_dir():
        from metrics.gen import score_gen
        from metrics.readers import load_multi_ref
        wr, wh = load_multi_ref(fx / "reference", fx / "hypothesis", 6)
        print(f"WebNLG fixture: {len(wh)} segments, 6 references")
        for m in ["bleu", "chrf++", "ter"] + (["meteor"] if args.meteor else []):
            timed(m, lambda m=m: score_gen(wr, wh, 6, [m])[0])
        if args.pyter:
            import pyter
            from metrics.tokenization import treebank_tokenize
            rt = [[treebank_tokenize(r) for r in rs] for rs in wr]
            ht = [treebank_tokenize(h) for h in wh]
            timed("TER, original pyter", lambda: sum(
                min(pyter.ter(h, r) for r in rs) for rs, h in zip(rt, ht)) / len(ht))


if __name__ == "__main__":
    main()
