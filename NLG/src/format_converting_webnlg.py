"""WebNLG 2017 json -> jsonl of {"context": triples, "completion": text, "cate": seen?}.

    python src/format_converting_webnlg.py data/webnlg_challenge_2017/train.json \
        data/webnlg_challenge_2017/train_formatted.jsonl

Output is the same as Microsoft's LoRA script: one line per lexicalisation whose comment is
"good", in entry order; the context is "subj : prop : obj" joined by " | " (as written in
`modifiedtripleset`); "cate" is true when the entry's category is one of the ten seen during
training, which gpt2_decode.py --filter seen|unseen uses. Prints each category's entry count.
A malformed entry stops the run with the file and the entry's index.
"""
if not __package__:  # run as a file (python src/format_converting_webnlg.py), as in Microsoft's repo
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlg")
from nlg.format_io import cli, read_json, write_jsonl

SEEN_CATEGORIES = (
    "Airport", "Astronaut", "Building", "City", "ComicsCharacter",
    "Food", "Monument", "SportsTeam", "University", "WrittenWork",
)


def _entry_error(path, idx, msg):
    return ValueError(f"{path}: entries[{idx}]: {msg}")


def convert_entries(data, path):
    """Records in output order, and the entry count per category (first-seen order)."""
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ValueError(f"{path}: expected a JSON object with an 'entries' list")
    records = []
    counts = {}
    for idx, wrapper in enumerate(data["entries"]):
        key = str(idx + 1)  # entries are numbered from 1, each wrapped in {"<number>": {...}}
        if not isinstance(wrapper, dict) or key not in wrapper:
            raise _entry_error(path, idx, f"expected an object keyed {key!r}")
        entry = wrapper[key]
        try:
            lexs = entry["lexicalisations"]
            triples = entry["modifiedtripleset"]
            cate = entry["category"]
        except (KeyError, TypeError) as e:
            raise _entry_error(path, idx, f"missing field {e}") from None
        counts[cate] = counts.get(cate, 0) + 1
        parts = []
        for j, t in enumerate(triples):
            try:
                parts.append("{} : {} : {}".format(t["subject"], t["property"], t["object"]))
            except (KeyError, TypeError) as e:
                raise _entry_error(path, idx, f"modifiedtripleset[{j}] lacks {e}") from None
        context = " | ".join(parts)
        for j, lex in enumerate(lexs):
            try:
                comment, text = lex["comment"], lex["lex"]
            except (KeyError, TypeError) as e:
                raise _entry_error(path, idx, f"lexicalisations[{j}] lacks {e}") from None
            if comment == "good":
                records.append({"context": context, "completion": text, "cate": cate in SEEN_CATEGORIES})
    return records, counts


def convert(in_path, out_path):
    records, counts = convert_entries(read_json(in_path), in_path)
    for cate, n in counts.items():
        print("cate", cate, n)
    return write_jsonl(out_path, records)


def main(argv=None):
    cli(convert, "format_converting_webnlg.py", "INPUT.json", argv)


if __name__ == "__main__":
    main()
