"""Printing scores the way the official scorers do, and as JSON at full precision."""
import json
import math

# decimals each official scorer prints (GenerationEval's BLEU comes from the perl script)
E2E_DECIMALS = 4
GEN_DECIMALS = {"BLEU": 2}


def format_lines(scores, notes, decimals):
    out = []
    for name, value in scores.items():
        if value is None:
            out.append(f"{name}: unavailable ({notes.get(name, 'not computed')})")
        else:
            d = decimals.get(name, 4) if isinstance(decimals, dict) else decimals
            out.append(f"{name}: {value:.{d}f}")
    return out


def to_json(scores, notes=None, **extra):
    obj = {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
           for k, v in scores.items()}
    missing = {k: notes[k] for k in (notes or {}) if scores.get(k) is None}
    if missing:
        obj["unavailable"] = missing
    obj.update(extra)
    return json.dumps(obj)
