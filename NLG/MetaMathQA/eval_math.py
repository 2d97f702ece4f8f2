"""MATH accuracy of a saved model, as LoRMA's (MetaMath's) eval_math.py measures it.

    python eval_math.py --model SAVE_PATH --data_file MATH_test.jsonl [--batch_size --start --end]

Greedy generation with the official prompt and stop strings, up to 2048 new tokens; the answer
after the last "The answer is: " is compared with the last \\boxed{} of the reference solution
by MetaMath's normalisation (answers.is_equiv). Prints the official summary lines and writes
<model>/math_results.json.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.append(os.path.dirname(os.path.dirname(HERE)))   # traincore from an uninstalled checkout
from answers import is_equiv, last_boxed_only_string, math_prediction, remove_boxed  # noqa: E402
from traincore import cli  # noqa: E402
from generate import EVAL_PROMPT, build_parser, generate, read_jsonl, report  # noqa: E402


def _main(argv=None):
    args = build_parser(__doc__.split("\n\n")[0], 2048).parse_args(argv)
    rows = read_jsonl(args.data_file, args.start, args.end)
    for n, row in enumerate(rows, 1):
        if "instruction" not in row or "output" not in row:
            raise ValueError(f"{args.data_file}: row {n + args.start} lacks instruction / "
                             f"output (MATH test format)")
    prompts = [EVAL_PROMPT.format(instruction=r["instruction"]) for r in rows]
    completions = generate(args.model, prompts, args)
    result, invalid = [], []
    for row, text in zip(rows, completions):
        gold = remove_boxed(last_boxed_only_string(row["output"]))
        pred = math_prediction(text)
        if pred is None:
            invalid.append({"question": row["instruction"], "output": text, "answer": gold})
            result.append(False)
        else:
            result.append(is_equiv(pred, gold))
    return report("math", "", result, invalid, args)


def main(argv=None):
    """_main with bad input and Ctrl-C reported as one line (exit 2 / 130; traincore.cli)."""
    return cli.run("eval_math.py", _main, argv)


if __name__ == "__main__":
    main()
