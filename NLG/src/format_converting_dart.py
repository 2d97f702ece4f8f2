"""DART json -> jsonl of {"context": triples, "completion": text}.

    python src/format_converting_dart.py data/dart/dart-v1.1.1-full-train.json \
        data/dart/train_formatted.jsonl

Output is the same as Microsoft's LoRA script: one line per annotation, in entry order; the
context is "subj : relation : obj" joined by " | ", with the relation lowercased. Prints the
number of entries ("unique source is N"). A malformed entry stops the run with the file and
the entry's index.
"""
if not __package__:  # run as a file (python src/format_converting_dart.py), as in Microsoft's repo
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlg")
from nlg.format_io import cli, read_json, write_jsonl


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
            if not isinstance(t, list) or len(t) != 3 or not all(isinstance(x, str) for x in t):
                raise ValueError(f"{where}: tripleset[{j}] must be [subject, relation, object] "
                                 f"strings, got {t!r}")
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
    data = read_json(in_path)
    records = convert_entries(data, in_path)
    print("unique source is", len(data))
    return write_jsonl(out_path, records)


def main(argv=None):
    cli(convert, "format_converting_dart.py", "INPUT.json", argv)


if __name__ == "__main__":
    main()
