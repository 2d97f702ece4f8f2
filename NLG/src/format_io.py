"""What the three format_converting_*.py scripts share: reading the raw file with errors that
name it, writing the formatted jsonl, and the two-argument command line."""
import json
import os
import sys

from traincore.cli import DEBUG_FLAG, run, usage_error


def _not_utf8(path, data: bytes, e: UnicodeDecodeError, first_line=1):
    line = first_line + data.count(b"\n", 0, e.start)
    return ValueError(f"{path}:{line}: not UTF-8 text (byte {data[e.start:e.start + 1]!r} at "
                      f"offset {e.start}); convert the file to UTF-8")


def text_lines(path):
    """(line number, text) of a UTF-8 file; bytes that are not UTF-8 name their line."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, raw, e, n) from None


def read_json(path):
    with open(path, "rb") as reader:
        data = reader.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, data, e) from None
    try:
        return json.loads(text)
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
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != DEBUG_FLAG]
    if len(argv) != 2:
        usage_error(script, f"expected 2 arguments, got {len(argv)} (usage: python src/{script} "
                            f"{input_kind} OUTPUT_formatted.jsonl)")
    if not os.path.isfile(argv[0]):
        usage_error(script, f"{argv[0]}: no such file (give the raw {input_kind})")
    run(script, convert, argv[0], argv[1])
