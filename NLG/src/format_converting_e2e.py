"""E2E NLG lines `MR||REF` -> jsonl of {"context": MR, "completion": REF}, one per line.

    python src/format_converting_e2e.py data/e2e/train.txt data/e2e/train_formatted.jsonl

Output is the same as Microsoft's LoRA script: the line is stripped of surrounding whitespace,
then split at '||'. A line without exactly one '||' stops the run with the file and line number.
"""
if not __package__:  # run as a file (python src/format_converting_e2e.py), as in Microsoft's repo
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlg")
from nlg.format_io import cli, text_lines, write_jsonl


def convert_line(line, path, lineno):
    items = line.strip().split("||")
    if len(items) != 2:
        raise ValueError(f"{path}:{lineno}: expected 'MR||REF' with exactly one '||', got {line.rstrip()!r}")
    return {"context": items[0], "completion": items[1].strip("\n")}


def convert(in_path, out_path):
    """Convert one file; returns the number of examples written."""
    records = [convert_line(line, in_path, i) for i, line in text_lines(in_path)]
    return write_jsonl(out_path, records)


def main(argv=None):
    cli(convert, "format_converting_e2e.py", "INPUT.txt", argv)


if __name__ == "__main__":
    main()
