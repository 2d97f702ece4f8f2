"""GSM8K accuracy of a saved model, as LoRMA's (MetaMath's) eval_gsm8k.py measures it.

    python eval_gsm8k.py --model SAVE_PATH --data_file GSM8K_test.jsonl [--batch_size --start --end]

Greedy generation with the official prompt ("... ### Response: Let's think step by step.") and
stop strings, up to 512 new tokens; the answer is `extract_answer_number` of the completion,
right when it equals the integer after '#### ' in the reference. Prints the official summary
lines and writes <model>/gsm8k_results.json (accuracy, counts, invalid outputs).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.append(os.path.dirname(os.path.dirname(HERE)))   # traincore from an uninstalled checkout
from answers import extract_answer_number, gsm8k_gold  # noqa: E402,F401 (the official API)
from traincore import cli  # noqa: E402
from generate import EVAL_PROMPT, build_parser, generate, read_jsonl, report  # noqa: E402


def _main(argv=None):
    args = build_parser(__doc__.split("\n\n")[0], 512).parse_args(argv)
    rows = read_jsonl(args.data_file, args.start, args.end)
    for n, row in enumerate(rows, 1):
        if "query" not in row or "#### " not in str(row.get("response", "")):
            raise ValueError(f"{args.data_file}: row {n + args.start} lacks query / a response "
                             f"with '#### <answer>' (GSM8K test format)")
    prompts = [EVAL_PROMPT.format(instruction=r["query"]) for r in rows]
    completions = generate(args.model, prompts, args)
    result, invalid = [], []
    for row, text in zip(rows, completions):
        pred = extract_answer_number(text)
        gold = gsm8k_gold(row["response"])
        ok = pred is not None and float(pred) == float(gold)
        result.append(ok)
        if pred is None:
            invalid.append({"question": row["query"], "output": text, "answer": gold})
    return report("gsm8k", "gsm8k ", result, invalid, args,
                  {"completions": [{"query": r["query"], "output": c, "correct": ok}
                                   for r, c, ok in zip(rows, completions, result)]})


def main(argv=None):
    """_main with bad input and Ctrl-C reported as one line (exit 2 / 130; traincore.cli)."""
    return cli.run("eval_gsm8k.py", _main, argv)


if __name__ == "__main__":
    main()
