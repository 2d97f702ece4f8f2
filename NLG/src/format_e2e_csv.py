"""The official E2E release CSVs (trainset.csv, devset.csv, testset_w_refs.csv; columns mr, ref)
-> Microsoft's line format `MR||REF`, the raw files LoRA trains on (data/e2e/{train,valid,test}.txt).

    python -m nlg.format_e2e_csv devset.csv data/e2e/valid.txt

`name[Alimentum], area[city centre], familyFriendly[no]` + `... not family-friendly.` becomes
`name : Alimentum | area : city centre | family friendly : no||... not family - friendly . `:
the attributes in the CSV's order, eatType / familyFriendly / priceRange renamed Type /
family friendly / price, values and reference tokenized as Microsoft's files are
(nlg/e2e_tokenize.py). One line per CSV row, in file order. A row that cannot be converted stops
the run with the file, line and row; nothing is written then.
"""
import csv
import re
import sys

from nlg.e2e_tokenize import tokenize, tokenize_reference
from nlg.format_io import text_lines
from traincore.cli import DEBUG_FLAG, run, usage_error

ATTRIBUTE_NAMES = {"eatType": "Type", "familyFriendly": "family friendly", "priceRange": "price"}
_ATTRIBUTE = re.compile(r"\s*([^\[\],|]+?)\s*\[([^\[\]|]*)\]\s*(?:,|$)")


def convert_mr(mr):
    """`key[value], ...` -> `key : value | ...`; ValueError for anything else."""
    parts, pos = [], 0
    while pos < len(mr):
        m = _ATTRIBUTE.match(mr, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"mr {mr!r} is not 'attribute[value], attribute[value], ...' "
                             f"(at character {pos + 1})")
        key, value = m.group(1), m.group(2)
        parts.append(f"{ATTRIBUTE_NAMES.get(key, key)} : {tokenize(value)}")
        pos = m.end()
    if not parts:
        raise ValueError("empty mr")
    return " | ".join(parts)


def convert_row(mr, ref):
    if "||" in ref:
        raise ValueError(f"ref holds '||', the line format's separator: {ref!r}")
    if not ref.strip():
        raise ValueError("empty ref")
    return convert_mr(mr) + "||" + tokenize_reference(ref)


def read_rows(path):
    """(line, row number, mr, ref) for each data row of an E2E release CSV."""
    lines = (text.lstrip("\ufeff") if n == 1 else text for n, text in text_lines(path))
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file (expected a header with the columns mr, ref)")
        missing = [c for c in ("mr", "ref") if c not in header]
        if missing:
            raise ValueError(f"{path}:1: no column {' or '.join(missing)} in the header {header} "
                             f"(an E2E release CSV has mr, ref)")
        i_mr, i_ref = header.index("mr"), header.index("ref")
        for row_no, row in enumerate(reader, 1):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{reader.line_num}: row {row_no} has {len(row)} fields, "
                                 f"the header {len(header)}")
            yield reader.line_num, row_no, row[i_mr], row[i_ref]
    except csv.Error as e:
        raise ValueError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None


def convert(in_path, out_path):
    """Convert one CSV; returns the number of lines written."""
    out = []
    for line, row_no, mr, ref in read_rows(in_path):
        try:
            out.append(convert_row(mr, ref))
        except ValueError as e:
            raise ValueError(f"{in_path}:{line}: row {row_no}: {e}") from None
    if not out:
        raise ValueError(f"{in_path}: no data rows")
    with open(out_path, "w", encoding="utf8") as f:
        f.writelines(x + "\n" for x in out)
    return len(out)


def main(argv=None):
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != DEBUG_FLAG]
    prog = "format_e2e_csv.py"
    if len(argv) != 2:
        usage_error(prog, f"expected 2 arguments, got {len(argv)} "
                          "(usage: python -m nlg.format_e2e_csv INPUT.csv OUTPUT.txt)")
    n = run(prog, convert, argv[0], argv[1])
    print(f"{argv[0]}: {n} lines -> {argv[1]}")


if __name__ == "__main__":
    main()
