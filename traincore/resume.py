"""Resume only with the settings that produced the state."""
from typing import Dict, Iterable, List


def changed_settings(saved: Dict, now: Dict, allowed: Iterable[str] = ()) -> List[str]:
    """'name: old -> new' for every setting that differs, except those in `allowed`."""
    allowed = set(allowed)
    out = []
    for k in sorted(set(saved) | set(now)):
        if k in allowed:
            continue
        a, b = saved.get(k), now.get(k)
        if a != b:
            out.append(f"{k}: {a!r} -> {b!r}")
    return out
