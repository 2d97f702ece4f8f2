"""Reading reference and prediction files, with errors that name the file and line.

The official scorers split on '\n' (so a final newline became an extra empty segment) or
crash deep inside on bad bytes; here a file is a list of lines without their terminators.
"""
import csv
import re
from pathlib import Path


class ScoreInputError(ValueError):
    """Bad scorer input; the message names the file (and line where there is one)."""


def read_text_lines(path):
    """Lines of a UTF-8 text file without terminators; a final newline ends the last line
    instead of adding an empty one."""
    path = Path(path)
    if not path.is_file():
        raise ScoreInputError(f"{path}: no such file")
    data = path.read_bytes()
    if not data:
        raise ScoreInputError(f"{path}: file is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ScoreInputError(
            f"{path}: line {line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    # only '\n' (and '\r\n') end a line: str.splitlines would also split on \x1c, \u2028, ...
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def read_hypotheses(path):
    """One prediction per line, stripped as measure_scores.py does."""
    return [ln.strip() for ln in read_text_lines(path)]


def read_reference_blocks(path):
    """Blank-line-separated reference blocks (the format gpt2_decode.py writes for E2E).

    Runs of blank lines count as one separator. A file without any blank line is a
    single-reference file: one reference per line, as measure_scores.py reads it.
    """
    blocks, cur = [], []
    for ln in read_text_lines(path):
        ln = ln.strip()
        if ln:
            cur.append(ln)
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    if not blocks:
        raise ScoreInputError(f"{path}: no references (only blank lines)")
    if len(blocks) == 1:
        blocks = [[r] for r in blocks[0]]
    return blocks


# column headers measure_scores.py recognises in CSV/TSV files
HEADER_SRC = r"(mr|src|source|meaning(?:[_ .-]rep(?:resentation)?)?|da|dial(?:ogue)?[_ .-]act)s?"
HEADER_SYS = r"(out(?:put)?|ref(?:erence)?|sys(?:tem)?(?:[_ .-](?:out(?:put)?|ref(?:erence)?))?)s?"
HEADER_REF = r"(trg|tgt|target|ref(?:erence)?|human(?:[_ .-](?:ref(?:erence)?))?)s?"


def is_table(path):
    return re.search(r"\.[ct]sv$", str(path), re.I) is not None


def read_table(path, header_text):
    """(sources, texts) from a two-column CSV/TSV file, with or without a header row."""
    rows_text = [ln for ln in read_text_lines(path) if ln.strip()]
    if not rows_text:
        raise ScoreInputError(f"{path}: no rows")
    delim = "\t" if "\t" in rows_text[0] else ","
    rows = list(csv.reader(rows_text, delimiter=delim))
    head = rows[0]
    src_cols = [i for i, f in enumerate(head) if re.match(HEADER_SRC, f, re.I)]
    txt_cols = [i for i, f in enumerate(head) if re.match(header_text, f, re.I)]
    if len(src_cols) == 1 and len(txt_cols) == 1:
        src_col, txt_col, body, first = src_cols[0], txt_cols[0], rows[1:], 2
    elif not src_cols and not txt_cols:
        if len(head) != 2:
            raise ScoreInputError(f"{path}: line 1: no header and {len(head)} columns (need 2)")
        src_col, txt_col, body, first = 0, 1, rows, 1
    else:
        raise ScoreInputError(
            f"{path}: line 1: cannot tell the source and text columns apart in header {head}")
    ncol = len(head)
    for i, row in enumerate(body, start=first):
        if len(row) != ncol:
            raise ScoreInputError(f"{path}: row {i}: {len(row)} columns, expected {ncol}")
    return [r[src_col] for r in body], [r[txt_col].strip() for r in body]


def load_e2e(ref_path, hyp_path):
    """(references per context, hypotheses) for measure_scores.py-style inputs."""
    if is_table(hyp_path):
        srcs, hyps = read_table(hyp_path, HEADER_SYS)
    else:
        srcs, hyps = None, read_hypotheses(hyp_path)
    if is_table(ref_path):
        ref_srcs, ref_texts = read_table(ref_path, HEADER_REF)
        if srcs is not None and any(srcs):
            by_src = {}
            for s, r in zip(ref_srcs, ref_texts):
                by_src.setdefault(s, []).append(r)
            missing = [s for s in srcs if s not in by_src]
            if missing:
                raise ScoreInputError(f"{ref_path}: no reference for source {missing[0]!r}")
            refs = [by_src[s] for s in srcs]
        else:
            refs, prev = [], object()
            for s, r in zip(ref_srcs, ref_texts):
                if s != prev:
                    refs.append([])
                    prev = s
                refs[-1].append(r)
    else:
        refs = read_reference_blocks(ref_path)
    if len(refs) != len(hyps):
        raise ScoreInputError(
            f"{hyp_path}: {len(hyps)} predictions but {ref_path} has {len(refs)} reference "
            f"groups; they must match one to one")
    return refs, hyps


def reference_paths(prefix, num_refs):
    """GenerationEval's naming: prefix0..prefixN-1, or prefix itself when N == 1."""
    if num_refs < 1:
        raise ScoreInputError(f"number of references must be >= 1, got {num_refs}")
    if num_refs == 1:
        return [Path(prefix)]
    return [Path(f"{prefix}{i}") for i in range(num_refs)]


def load_multi_ref(ref_prefix, hyp_path, num_refs):
    """(references per segment, hypotheses) for GenerationEval-style inputs (lines kept as
    written, not stripped: the official scorers see them that way)."""
    hyps = read_text_lines(hyp_path)
    ref_files = reference_paths(ref_prefix, num_refs)
    columns = []
    for p in ref_files:
        lines = read_text_lines(p)
        if len(lines) != len(hyps):
            raise ScoreInputError(
                f"{p}: {len(lines)} lines but {hyp_path} has {len(hyps)}; every reference file "
                f"needs one line per hypothesis")
        columns.append(lines)
    refs = [list(r) for r in zip(*columns)]
    return refs, hyps
