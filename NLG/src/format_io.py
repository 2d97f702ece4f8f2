"""What the three format_converting_*.py scripts share: reading the raw file with errors that
name it, writing the formatted jsonl, and the two-argument command line."""
import json
import sys


def read_json(path):
    with open(path, "r", encoding="utf8") as reader:
        try:
            return json.load(reader)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def write_jsonl(path, records):
    """Records are converted in full before this is called, so a bad input line never leaves a
    half-written output file."""
    with open(path, "w", encoding="utf8") as writer:
        for x in records:
            writer.write(json.dumps(x) + "\n")
    return len(records)


def cli(convert, script, input_kind, argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.exit(f"usage: python src/{script} {input_kind} OUTPUT_formatted.jsonl")
    try:
        convert(argv[0], argv[1])
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")
