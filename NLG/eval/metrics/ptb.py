"""The tokenization the COCO caption code applies before METEOR, ROUGE-L and CIDEr.

e2e-metrics runs Stanford's PTBTokenizer (CoreNLP 3.4.1, `-preserveLines -lowerCase`, Java)
and then drops the punctuation tokens in PUNCTUATIONS. This is a pure-Python rendering of the
rules that decide the surviving tokens: what stays attached to a word (abbreviation periods,
inner hyphens, apostrophes, number separators), what is split off (contractions, final
periods, commas, quotes), and PTB's symbol rewrites (brackets to -lrb- etc., which survive the
filter because they are lower-cased; £ to #, € to $). It agrees with the jar token for token
on the E2E, WebNLG and DART texts in ../shared (see tests/test_scorers_ptb.py); exotic input
(URLs, emoticons, SGML) may tokenize differently.
"""
import re
import unicodedata

# the COCO code's list; compared after lower-casing, so "-LRB-" etc. never match
PUNCTUATIONS = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                ".", "?", "!", ",", ":", "-", "--", "...", ";"}

# abbreviations that keep their period in lower case and Capitalized form
_ABBREV = set("""
mr mrs ms dr st jr sr inc ltd co corp vs etc no mt ft ave blvd rd gen lt col sgt capt prof
rev hon dept univ est sq rt jan feb mar apr jun jul aug sep sept oct nov dec
""".split())
_ABBREV_CAP = {"Fig"}

_CHAR_MAP = {
    "\u2019": "'", "\u2018": "`", "\u201c": '"', "\u201d": '"', "\u2013": "--", "\u2014": "--",
    "\u2026": "...", "\u00a0": " ", "\u00a3": " # ", "\u20ac": " $ ",
}
_CHAR_RX = re.compile("|".join(map(re.escape, _CHAR_MAP)))

# a word: runs of word characters joined by inner hyphens, slashes, ampersands, periods,
# apostrophes (o'neil), and commas/colons between digits
_WORD = r"""
(?:'(?=\d)\d+\w*)                                  # '90s
| (?:(?<!\S)[+-](?=\d))?[^\W_](?:\w*[^\W_])?(?:
      (?:-|/|&|\.)(?=\w)\w+
    | (?<=\d)[,:](?=\d)\d+
    | '(?!(?:s|re|ve|ll|d|m|t)\b)(?=\w\w)\w+
  )*
"""
# "whole": what PTBLexer keeps as one token although it holds punctuation (URLs, e-mail
# addresses, #tags, ",2012", ".537", "?!")
_TOKEN = re.compile(r"""
  (?P<whole>https?://\S+|www\.\S+|\w+@\w+(?:\.\w+)+|[#@][^\W_]\w*|(?<!\S),\d+|(?<![\w.])\.\d+|[!?]{2,})
| (?P<clitic>(?i:'(?:s|re|ve|ll|d|m)|n't)\b|(?i:'t(?=(?:is|was)\b)))
| (?P<word>""" + _WORD + r""")
| (?P<dots>\.{2,})
| (?P<dash>-{2,})
| (?P<quote>"|''|``)
| (?P<other>\S)
""", re.X)

_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "wanna": ("wan", "na"),
                "gotta": ("got", "ta"), "lemme": ("lem", "me"), "gimme": ("gim", "me")}
_CONTRACTION = re.compile(r"(?i)^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_NUM_UNIT = re.compile(r"^(\d+(?:[.,:]\d+)+)([^\W\d_].*)$")
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}


def _is_abbrev(word):
    if word.lower() in _ABBREV and (word.islower() or word.istitle()):
        return True
    if word in _ABBREV_CAP:
        return True
    # single letters and dotted initialisms: j. u.s.a. p.m. e.g.
    return re.fullmatch(r"[^\W\d_](?:\.[^\W\d_])*", word) is not None


def _word_tokens(word):
    m = _NUM_UNIT.match(word)
    if m:
        return [m.group(1), m.group(2)]
    low = word.lower()
    if low in _SPLIT_WORDS:
        n = len(_SPLIT_WORDS[low][0])
        return [word[:n], word[n:]]
    m = _CONTRACTION.match(word)
    if m and m.group(1) not in ("'",):
        return [m.group(1), m.group(2)]
    return [word]


def ptb_tokens(text):
    """Lower-cased PTB tokens of one line, punctuation included."""
    text = _CHAR_RX.sub(lambda m: _CHAR_MAP[m.group(0)], text)
    out = []
    pos = 0
    n = len(text)
    while pos < n:
        if text[pos].isspace():
            pos += 1
            continue
        m = _TOKEN.match(text, pos)
        kind = m.lastgroup
        tok = m.group(0)
        pos = m.end()
        if kind == "word":
            # "don't" is "do n't"
            if tok[-1:] in "nN" and len(tok) > 1 and re.match(r"(?i)'t\b", text[pos:pos + 3]):
                out += [tok[:-1].lower(), (tok[-1] + text[pos:pos + 2]).lower()]
                pos += 2
                continue
            # a following period stays with an abbreviation
            if pos < n and text[pos] == "." and not text.startswith("..", pos) and _is_abbrev(tok):
                tok += "."
                pos += 1
            out.extend(_word_tokens(tok))
        elif kind == "other":
            if tok in _BRACKETS:
                out.append(_BRACKETS[tok])
            elif unicodedata.category(tok) in ("Mc", "Cc", "Cf", "Co", "Cn"):
                continue  # PTBLexer drops what it cannot tokenize
            else:
                out.append(tok)
        elif kind == "quote":
            out.append("``" if tok == "``" else "''")
        elif kind == "dots":
            out += [".", "."] if len(tok) == 2 else ["..."]
        elif kind == "dash":
            out.append("--")
        else:
            out.append(tok)
    return [t.lower() for t in out]


def coco_tokenize(text):
    """What the COCO scorers see: PTB tokens without punctuation, joined by single spaces."""
    return " ".join(t for t in ptb_tokens(text.replace("\n", " ")) if t not in PUNCTUATIONS)
