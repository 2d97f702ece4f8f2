"""The tokenization of the references in Microsoft's E2E files (`data/e2e/{train,valid,test}.txt`).

Microsoft's LoRA repository ships E2E as lines `MR||REF` whose text was tokenized before it was
committed; the official release (trainset.csv, devset.csv, testset_w_refs.csv) holds the raw text.
Comparing valid.txt with devset.csv shows how: each reference was split into sentences by NLTK's
Punkt with its untrained default parameters, each sentence was tokenized by the Moses tokenizer
(tokenizer.perl, English, aggressive hyphen splitting with `@-@` written back as `-`, no XML
escaping), and each tokenized sentence was written followed by one space. The MR values went
through the same Moses tokenizer (`£20-25` -> `£ 20 - 25`). This module reimplements those rules
(no NLTK, no Moses needed) and reproduces valid.txt from devset.csv on every line.

Why both steps matter: Moses alone keeps a period attached when the next word starts in lower
case (`food. it` stays), but Punkt ends a sentence there first, and Moses always splits the
period off a sentence's last word (`food . it`). Punkt without training knows no abbreviations:
it ends a sentence after any word ending in one period, except a number or a single letter
followed by a lower-case word or punctuation (`out of 5. in` stays one sentence), and a single
letter followed by a capital (`J. Bach`).

Character classes follow Python's `str` methods (Moses uses Perl's Unicode classes); they agree
on the E2E text, which is ASCII plus `£` and `é`.
"""
import functools
import re

# ---------------------------------------------------------------------------------------------
# Sentence splitting: Punkt's boundary decision with empty parameters (no abbreviations, no
# collocations, no sentence starters, no orthographic statistics).

# Characters that end a word for Punkt and may directly follow a sentence end.
_NON_WORD = r"""[)";}\]*:@'({\[!?\u2018\u2019\u201c\u201d\xab\xbb]"""
_MULTI_CHAR = r"(?:-{2,}|\.{2,}|(?:\.\s){2,}\.)"
# A Punkt word: a run of dashes or dots, or a word that does not start with one of these
# characters and ends before white space, punctuation or a final comma, or any single character.
_PUNKT_WORD = re.compile(
    rf"""{_MULTI_CHAR}
        | (?=[^("`{{\[:;&\#*@)}}\]\-,])\S+?(?=\s|$|{_NON_WORD}|{_MULTI_CHAR}|,(?=$|\s|{_NON_WORD}|{_MULTI_CHAR}))
        | \S""",
    re.VERBOSE)
# A possible sentence end: ., ? or ! followed by punctuation, or by white space and a token.
_END_CANDIDATE = re.compile(rf"[.?!](?=(?P<after>{_NON_WORD}|\s+(?P<next>\S+)))")
_NUMBER = re.compile(r"-?[.,]?\d[\d,.-]*\.?")
_INITIAL = re.compile(r"[^\W\d]\.")
_ELLIPSIS = re.compile(r"\.\.+")
_SENTENCE_PUNCT = (";", ":", ",", ".", "!", "?")
_CLOSING = re.compile(r"""["')\]}\u2018\u2019\u201c\u201d\xab\xbb]+?(?:\s+|(?=--)|$)""")


def _is_break(tok, next_tok):
    """Punkt's verdict on a word token followed by next_tok."""
    if tok in (".", "?", "!"):
        return True
    if _ELLIPSIS.fullmatch(tok) or not tok.endswith(".") or tok.endswith(".."):
        return False
    # Ordinals and initials: not a sentence end before a word that does not look like a
    # sentence start; with no statistics that is a lower-case word or punctuation ...
    initial = _INITIAL.fullmatch(tok) is not None
    if initial or _NUMBER.fullmatch(tok.lower()):
        if next_tok in _SENTENCE_PUNCT or next_tok[0].islower():
            return False
        # ... and for an initial also a capitalised word (J. Bach)
        if initial and next_tok[0].isupper():
            return False
    return True


def _context_breaks(context):
    """Whether a sentence ends inside the context text (a break after its last token does not count)."""
    toks = _PUNKT_WORD.findall(context)
    return any(_is_break(t, toks[i + 1]) for i, t in enumerate(toks[:-1]))


def split_sentences(text):
    """The sentences Punkt finds in text."""
    ends = []       # (match, start of the word before it)
    for m in _END_CANDIDATE.finditer(text):
        ws = max(text.rfind(c, 0, m.start()) for c in " \t\n\r\f\v")
        word_start = ws + 1 if ws >= 0 else 0
        # Several end characters in one word (`acting!!!`): only the last one is a candidate.
        if ends and ends[-1][0].start() > word_start:
            ends.pop()
        ends.append((m, word_start))
    spans, start = [], 0
    for m, word_start in ends:
        if _context_breaks(text[word_start:m.end()] + m.group("after")):
            spans.append((start, m.end()))
            start = m.start("next") if m.group("next") else m.end()
    spans.append((start, len(text.rstrip())))
    # Closing quotes and brackets after a sentence end belong to that sentence: `(Sent1.) Sent2.`
    sentences, shift = [], 0
    for k, (s, e) in enumerate(spans):
        s, shift = s + shift, 0
        m = _CLOSING.match(text, spans[k + 1][0], spans[k + 1][1]) if k + 1 < len(spans) else None
        if m:
            e, shift = m.start() + len(m.group().rstrip()), m.end() - m.start()
        if m or s < e:
            sentences.append(text[s:e])
    return sentences


# ---------------------------------------------------------------------------------------------
# Moses tokenizer.perl, English, -a (aggressive hyphen splitting), -no-escape.

# Words before a period that does not end a sentence. Moses reads them from nonbreaking_prefix.en;
# only the single letters can matter after Punkt (it ends a sentence after every other word
# ending in a period, and Moses then always splits), unless the period is followed directly by
# punctuation (`Dr.,`), so the list holds the letters and the common English titles.
_PREFIXES = frozenset(
    [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    + "Adj Adm Adv Asst Bart Bldg Brig Bros Capt Cmdr Col Comdr Con Corp Cpl DR Dr Drs Ens Gen Gov Hon "
      "Hr Hosp Insp Lt MM MR MRS MS Maj Messrs Mlle Mme Mr Mrs Ms Msgr Op Ord Pfc Ph Prof Pvt Rep Reps "
      "Res Rev Rt Sen Sens Sfc Sgt Sr St Supt Surg v vs i.e rev e.g "
      "Jan Feb Mar Apr Jun Jul Aug Sep Oct Nov Dec".split())
# ... and words that are prefixes only before a number (`No. 5`).
_NUMERIC_PREFIXES = frozenset("No Nos Art Nr pp".split())

_ALNUM = r"[^\W_]"
_ALPHA = r"[^\W\d_]"
_NOT_ALPHA = r"[\W\d_]"
_DOTS = "\u01c2"   # placeholder for a run of dots (a letter, as Moses' DOTMULTI is letters)

_STEPS = [(re.compile(p), r) for p, r in (
    # every character that is not a letter, digit, white space or . ' ` , - is a token
    (r"([^\w\s.'`,-]|_)", r" \1 "),
    # a hyphen between letters or digits is a token (Moses -a writes `@-@`, Microsoft's files `-`)
    (rf"({_ALNUM})-(?={_ALNUM})", r"\1 - "),
    # a run of two or more dots is a token, kept from the period rules below
    (r"\.{2,}", lambda m: " " + _DOTS * len(m.group()) + " "),
    # a comma is a token unless it stands between two digits (5,300)
    (r"(\D),", r"\1 , "),
    (r",(\D)", r" , \1"),
    (r"(\d),$", r"\1 ,"),
    # apostrophes: split before English clitics (it 's, isn 't), else a token of their own
    (rf"({_NOT_ALPHA})'({_NOT_ALPHA})", r"\1 ' \2"),
    (rf"([\W_])'({_ALPHA})", r"\1 ' \2"),
    (rf"({_ALPHA})'({_NOT_ALPHA})", r"\1 ' \2"),
    (rf"({_ALPHA})'({_ALPHA})", r"\1 '\2"),
    (r"(\d)'(s)", r"\1 '\2"),
)]
_SPACES = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f]")
_HAS_ALPHA = re.compile(_ALPHA)
_DOT_QUOTE_END = re.compile(r"\.' ?$")


def _moses_words(sentence):
    text = _CONTROL.sub("", _SPACES.sub(" ", sentence)).strip()
    if _DOTS in text:
        raise ValueError(f"the text holds {_DOTS!r}, which the tokenizer uses internally: {sentence!r}")
    for pattern, repl in _STEPS:
        text = pattern.sub(repl, text)
    words = text.split()
    out = []
    for i, w in enumerate(words):
        if len(w) > 1 and w.endswith("."):
            # a period ending a word is a token unless the word is an abbreviation before more text
            pre, nxt = w[:-1], (words[i + 1] if i + 1 < len(words) else None)
            keep = nxt is not None and (
                ("." in pre and _HAS_ALPHA.search(pre))
                or pre in _PREFIXES
                or nxt[0].islower()
                or (pre in _NUMERIC_PREFIXES and nxt[0] in "0123456789"))
            if not keep:
                w = pre + " ."
        out.append(w)
    text = _DOT_QUOTE_END.sub(" . ' ", " ".join(out)).strip()   # `.'` ending the sentence
    return text.replace(_DOTS, ".").split()


@functools.lru_cache(maxsize=4096)   # MR values repeat on every line
def tokenize(text):
    """Moses tokens of one sentence (or MR value), joined by single spaces."""
    return " ".join(_moses_words(text))


def tokenize_reference(text):
    """A reference as Microsoft's files write it: each sentence tokenized, then one space."""
    return "".join(tokenize(s) + " " for s in split_sentences(text))
