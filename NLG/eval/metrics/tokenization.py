"""Tokenizers of the official scorers, rewritten as plain regular expressions.

- mteval_tokenize: mteval-v13a's "international-less" tokenization, used by e2e-metrics'
  Python BLEU/NIST (pymteval) and by Moses' multi-bleu-detok.perl (GenerationEval's BLEU).
- treebank_tokenize: NLTK's word_tokenize (Punkt sentences + the improved Treebank word
  rules), which GenerationEval applies before METEOR and TER.
"""
import re

_MTEVAL_SUBS = [
    (re.compile(r"<skipped>"), ""),
    (re.compile(r"-\n"), ""),
    (re.compile(r"\n"), " "),
    (re.compile(r"&quot;"), '"'),
    (re.compile(r"&amp;"), "&"),
    (re.compile(r"&lt;"), "<"),
    (re.compile(r"&gt;"), ">"),
]
_MTEVAL_SPLIT = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
    (re.compile(r"\s+"), " "),
]


def mteval_tokenize(text):
    """Space-joined tokens. An empty input gives '' (callers decide how to split it)."""
    for rx, rep in _MTEVAL_SUBS:
        text = rx.sub(rep, text)
    text = " " + text + " "
    for rx, rep in _MTEVAL_SPLIT:
        text = rx.sub(rep, text)
    return text.strip()


# ---------------------------------------------------------------- NLTK word_tokenize rules
_TB_START = [
    (re.compile(r"([«“‘„]|[`]+)"), r" \1 "),
    (re.compile(r'^"'), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), r"\1 "),
]
_TB_PUNCT = [
    (re.compile(r"([^\.])(\.)([\]\)}>\"'»”’ ]*+)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"[\u2012-\u2015]"), r" \g<0> "),
    (re.compile(r"([^\.])(\.)([\]\)}>\"']*)\s*$"), r"\1 \2\3 "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]"), r" \g<0> "),
]
_TB_BRACKETS = (re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> ")
_TB_DASHES = (re.compile(r"--"), r" -- ")
_TB_END = [
    (re.compile(r"([»”’])"), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"\s+"), " "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
_TB_SPLIT_WORDS = [re.compile(p) for p in (
    r"(?i)\b(can)(not)\b", r"(?i)\b(d)('ye)\b", r"(?i)\b(gim)(me)\b", r"(?i)\b(gon)(na)\b",
    r"(?i)\b(got)(ta)\b", r"(?i)\b(lem)(me)\b", r"(?i)\b(more)('n)\b", r"(?i)\b(wan)(na)(?=\s)",
    r"(?i) ('t)(is)\b", r"(?i) ('t)(was)\b",
)]


def treebank_words(sentence):
    """NLTK's improved Treebank word tokenizer on one sentence."""
    text = sentence
    for rx, rep in _TB_START:
        text = rx.sub(rep, text)
    for rx, rep in _TB_PUNCT:
        text = rx.sub(rep, text)
    for rx, rep in (_TB_BRACKETS, _TB_DASHES):
        text = rx.sub(rep, text)
    text = " " + text + " "
    for rx, rep in _TB_END:
        text = rx.sub(rep, text)
    for rx in _TB_SPLIT_WORDS:
        text = rx.sub(r" \1 \2 ", text)
    return text.split()


# Punkt's pretrained English model is a data download; this splitter makes the same call on
# what matters here (a period after a word, then a space) with a list of common abbreviations.
# Text that is already tokenized (periods standing alone, as gpt2_decode.py --tokenize writes)
# gives the same tokens whether or not it is split, so the choice only matters for raw text.
_ABBREV = set("""
mr mrs ms dr prof st jr sr inc ltd co corp bros vs etc no nos vol fig approx dept est
jan feb mar apr jun jul aug sep sept oct nov dec mt ft gen gov sen rep rev col lt sgt capt
u.s u.k e.g i.e a.m p.m d.c u.n
""".split())
_SENT_END = re.compile(r"(\S*?)([.!?])([\"'”’)\]]*)(\s+)(?=\S)")


def split_sentences(text):
    out, start = [], 0
    for m in _SENT_END.finditer(text):
        word = m.group(1).lower()
        if m.group(2) == "." and (
            word in _ABBREV or "." in word or (len(word) == 1 and word.isalpha())
            or word == ""
        ):
            continue
        out.append(text[start:m.end(3)])
        start = m.end()
    out.append(text[start:])
    return [s for s in out if s.strip()]


def treebank_tokenize(text):
    """nltk.word_tokenize(text) as a list of tokens."""
    return [tok for sent in split_sentences(text) for tok in treebank_words(sent)]
