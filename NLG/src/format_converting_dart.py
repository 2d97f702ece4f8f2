"""DART json -> jsonl of {"context": triples, "completion": text}.

    python src/format_converting_dart.py data/dart/dart-v1.1.1-full-train.json \
        data/dart/train_formatted.jsonl

Output is the same as Microsoft's LoRA script: one line per annotation, in entry order; the
context is "subj : relation : obj" joined by " | ", with the relation lowercased. Prints the
number of entries ("unique source is N"). A malformed entry stops the run with the file and
the entry's index.
"""
import json
import sys


def convert_entries(data, path):
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of entries")
    records = []
    for idx, entry in enumerate(data):
        where = f"{path}: entry [{idx}]"
        try:
            triples, annotations = entry["tripleset"], entry["annotations"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where}: missing field {e}") from None
        parts = []
        for j, t in enumerate(triples):
            if not isinstance(t, list) or len(t) != 3:
                raise ValueError(f"{where}: tripleset[{j}] must be [subject, relation, object], got {t!r}")
            subj, rela, obj = t
            parts.append("{} : {} : {}".format(subj, rela.lower(), obj))
        context = " | ".join(parts)
        for j, ann in enumerate(annotations):
            try:
                records.append({"context": context, "completion": ann["text"]})
            except (KeyError, TypeError) as e:
                raise ValueError(f"{where}: annotations[{j}] lacks {e}") from None
    return records


def convert(in_path, out_path):
    with open(in_path, "r", encoding="utf8") as reader:
        try:
            data = json.load(reader)
        except json.JSONDecodeError as e:
            raise ValueError(f"{in_path}:{e.lineno}: not valid JSON ({e.msg})") from None
    records = convert_entries(data, in_path)
    print("unique source is", len(data))
    with open(out_path, "w", encoding="utf8") as writer:
        for x in records:
            writer.write(json.dumps(x) + "\n")
    return len(records)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.exit("usage: python src/format_converting_dart.py INPUT.json OUTPUT_formatted.jsonl")
    try:
        convert(argv[0], argv[1])
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
