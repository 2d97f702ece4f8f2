"""E2E NLG lines `MR||REF` -> jsonl of {"context": MR, "completion": REF}, one per line.

    python src/format_converting_e2e.py data/e2e/train.txt data/e2e/train_formatted.jsonl

Output is the same as Microsoft's LoRA script: the line is stripped of surrounding whitespace,
then split at '||'. A line without exactly one '||' stops the run with the file and line number.
"""
import json
import sys


def convert_line(line, path, lineno):
    items = line.strip().split("||")
    if len(items) != 2:
        raise ValueError(f"{path}:{lineno}: expected 'MR||REF' with exactly one '||', got {line.rstrip()!r}")
    return {"context": items[0], "completion": items[1].strip("\n")}


def convert(in_path, out_path):
    """Convert one file; returns the number of examples written."""
    n = 0
    with open(in_path, "r", encoding="utf8") as reader:
        # Convert everything before opening the output so a bad line leaves no half-written file.
        records = [convert_line(line, in_path, i) for i, line in enumerate(reader, 1)]
    with open(out_path, "w", encoding="utf8") as writer:
        for x in records:
            writer.write(json.dumps(x) + "\n")
            n += 1
    return n


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.exit("usage: python src/format_converting_e2e.py INPUT.txt OUTPUT_formatted.jsonl")
    try:
        convert(argv[0], argv[1])
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
