"""JSON-lines logs that a killed run may have left with a partial last line."""
import json
from typing import List


def read_jsonl(path: str, warn=print) -> List[dict]:
    """Every complete record; a partial last line (a kill mid-write) is dropped with a notice,
    any other bad line is an error naming the file and line."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            last = all(not rest.strip() for rest in lines[n:])
            if last:
                warn(f"{path}:{n}: dropped a partial last line (the previous run was killed "
                     f"while writing it)")
                break
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return rows
