"""Answer extraction and comparison of the GSM8K and MATH evaluations, with the behaviour of
MetaMath's eval_gsm8k.py / eval_math.py / util.py (which LoRMA's evaluation runs), edge cases
included: the numbers of a paper row depend on them. Written from reading that code.
"""
import re
import unicodedata
from fractions import Fraction
from typing import Optional

ANSWER_MARK = "The answer is: "
_NUMBER = re.compile(r"[\-+]?\d*[\.,/]?\d+")


def is_number(s: str) -> bool:
    """float() or a single numeric Unicode character (MetaMath's is_number)."""
    try:
        float(s)
        return True
    except ValueError:
        pass
    try:
        unicodedata.numeric(s)
        return True
    except (TypeError, ValueError):
        return False


def extract_answer_number(completion: str) -> Optional[int]:
    """The integer after the last "The answer is: ", or None.

    Only the first number-like run counts, with at most one separator (",", "." or "/"), so
    "1,234,567" reads 1234; fractions a/b are evaluated ("7/2" -> 4), a zero denominator gives
    round(a); every value is rounded with Python's round (halves to even: 2.5 -> 2)."""
    if ANSWER_MARK not in completion:
        return None
    tail = completion.split(ANSWER_MARK)[-1].strip()
    found = _NUMBER.search(tail)
    if found is None:
        return None
    text = found.group()
    if "/" in text:
        numerator, denominator = text.split("/")
        if not (is_number(numerator) and is_number(denominator)):
            return None
        if denominator == "0":
            return round(float(numerator.replace(",", "")))
        frac = Fraction(text.replace(",", ""))
        return round(float(frac.numerator / frac.denominator))
    value = float(text.replace(",", ""))
    if value == float("inf"):
        return None
    return round(value)


def gsm8k_gold(response: str) -> int:
    """The reference answer of a GSM8K test row: the integer after '#### '."""
    return int(response.split("#### ")[1].replace(",", ""))


# ---------------------------------------------------------------------------- MATH

def last_boxed_only_string(text: str) -> Optional[str]:
    """The last \\boxed{...} (or \\fbox{...}) with balanced braces, or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return None


def remove_boxed(s: Optional[str]) -> Optional[str]:
    left = "\\boxed{"
    if isinstance(s, str) and s.startswith(left) and s.endswith("}"):
        return s[len(left):-1]
    return None


def _fix_fracs(s: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1b -> \\frac{1}{b}, \\frac1{72} -> \\frac{1}{72}. As
    upstream, a \\frac followed by one character leaves the whole string as it was, and one
    followed by nothing raises (is_equiv then compares the raw strings)."""
    parts = s.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part[0] == "{":
            out += part
            continue
        if len(part) < 2:
            return s
        a, b = part[0], part[1]
        if b == "{":
            out += "{" + a + "}" + part[1:]
        else:
            out += "{" + a + "}{" + b + "}" + part[2:]
    return out


def _fix_a_slash_b(s: str) -> str:
    """a/b of two integers -> \\frac{a}{b}; a side that is not an integer raises ValueError
    (upstream catches only the round-trip check)."""
    if s.count("/") != 1:
        return s
    a, b = s.split("/")
    ia, ib = int(a), int(b)
    if s != f"{ia}/{ib}":
        return s
    return "\\frac{" + str(ia) + "}{" + str(ib) + "}"


def _remove_right_units(s: str) -> str:
    if "\\text{ " in s:
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise AssertionError("more than one unit")
        return parts[0]
    return s


def _fix_sqrt(s: str) -> str:
    """\\sqrt2 -> \\sqrt{2} (a \\sqrt at the very end raises, as upstream)."""
    if "\\sqrt" not in s:
        return s
    parts = s.split("\\sqrt")
    out = parts[0]
    for part in parts[1:]:
        out += ("\\sqrt{" + part[0] + "}" + part[1:]) if part[0] != "{" else "\\sqrt" + part
    return out


def strip_string(s: str) -> str:
    """MetaMath's normalisation of a MATH answer, step by step in its order."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    s = _remove_right_units(s)
    s = s.replace("\\%", "").replace("\%", "")  # noqa: W605 (the same string, as upstream)
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


def is_equiv(a: Optional[str], b: Optional[str]) -> bool:
    """Equal after strip_string; raw equality when normalising fails (as upstream)."""
    if a is None and b is None:
        print("WARNING: Both None")
        return True
    if a is None or b is None:
        return False
    try:
        return strip_string(a) == strip_string(b)
    except Exception:
        return a == b


def math_prediction(completion: str) -> Optional[str]:
    """The predicted MATH answer: after the last "The answer is: ", up to '.\\n', one trailing
    full stop dropped; None when there is no answer mark."""
    if ANSWER_MARK not in completion:
        return None
    text = completion.split(ANSWER_MARK)[-1].split(".\n")[0].strip()
    if text and text[-1] == ".":
        text = text[:-1].strip()
    return text
