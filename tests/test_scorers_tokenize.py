"""Tokenizers against the programs they stand in for: Stanford's PTBTokenizer jar (COCO
metrics, from pycocoevalcap), NLTK's Treebank word tokenizer (GenerationEval)."""
import json
import shutil
import subprocess

import pytest

from metrics.ptb import PUNCTUATIONS, coco_tokenize
from metrics.tokenization import mteval_tokenize, split_sentences, treebank_tokenize, treebank_words


def _stanford_jar():
    import importlib.util
    if shutil.which("java") is None:
        pytest.skip("java not installed")
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None:
        pytest.skip("pycocoevalcap (ships the Stanford tokenizer jar) not installed")
    from pathlib import Path
    jar = Path(list(spec.submodule_search_locations)[0]) / "tokenizer" / "stanford-corenlp-3.4.1.jar"
    if not jar.is_file():
        pytest.skip(f"{jar} missing")
    return jar


def _jar_tokenize(jar, lines, tmp_path):
    f = tmp_path / "lines.txt"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = subprocess.run(["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
                          "-preserveLines", "-lowerCase", str(f)],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    # the COCO wrapper's filter
    return [" ".join(w for w in ln.rstrip().split(" ") if w not in PUNCTUATIONS)
            for ln in out[:len(lines)]]


def _fixture_lines(shared_fixtures):
    d = shared_fixtures / "metrics"
    lines = [ln for ln in (d / "e2e_valid" / "refs.txt").read_text().split("\n") if ln.strip()]
    lines += (d / "e2e_valid" / "hyps.txt").read_text().split("\n")
    for i in range(6):
        lines += (d / "webnlg_dev" / f"reference{i}").read_text().split("\n")
    lines += (d / "webnlg_dev" / "hypothesis").read_text().split("\n")
    return [ln for ln in lines if ln.strip()]


def test_ptb_matches_stanford_jar_on_fixtures(shared_fixtures, tmp_path):
    jar = _stanford_jar()
    lines = _fixture_lines(shared_fixtures)
    jar_out = _jar_tokenize(jar, lines, tmp_path)
    bad = [(s, j, coco_tokenize(s)) for s, j in zip(lines, jar_out) if coco_tokenize(s) != j]
    assert not bad, bad[:3]


def test_ptb_close_to_stanford_jar_on_raw_dart(shared_data, tmp_path):
    """Raw (untokenized, cased) DART sentences and triples: agreement on at least 99% of
    lines; what differs is table syntax such as PRIZE_MONEY_(USD)."""
    jar = _stanford_jar()
    data = json.loads((shared_data / "dart" / "dart-v1.1.1-full-dev.json").read_text())
    lines = [a["text"].replace("\n", " ") for ex in data for a in ex["annotations"]]
    lines += [" ".join(t) for ex in data for t in ex["tripleset"]]
    jar_out = _jar_tokenize(jar, lines, tmp_path)
    bad = sum(coco_tokenize(s) != j for s, j in zip(lines, jar_out))
    assert bad <= 0.01 * len(lines), f"{bad} of {len(lines)} lines differ"


@pytest.mark.parametrize("text, tokens", [
    ("The Eagle's price is £20-25.", "the eagle 's price is # 20-25"),
    ("don't go (now) to St. Louis, U.S.", "do n't go -lrb- now -rrb- to st. louis u.s."),
    ('"Hi," she said... it’s ok', "hi she said it 's ok"),
    ("family-friendly riverside. 5.", "family-friendly riverside 5"),
])
def test_ptb_known_cases(text, tokens):
    # written from the jar's output on these lines
    assert coco_tokenize(text) == tokens


def test_treebank_matches_nltk_word_tokenizer(shared_fixtures):
    nltk_tok = pytest.importorskip("nltk.tokenize", reason="nltk not installed")
    tok = nltk_tok.NLTKWordTokenizer()
    lines = _fixture_lines(shared_fixtures) + [
        'He said "cannot" -- I\'m (sure) [x] {y} <z> 5,000 people; ok?! ‘yes’ “no” «x» ’90s',
        "gonna wanna gotta lemme gimme 'tis 'twas more'n d'ye a*b $5 #1 @x 50% a&b ...",
    ]
    for ln in lines:
        assert treebank_words(ln) == tok.tokenize(ln), ln


def test_sentence_split_does_not_change_pretokenized_text(shared_fixtures):
    """gpt2_decode.py --tokenize leaves every period on its own, where splitting sentences
    or not gives the same tokens."""
    for ln in _fixture_lines(shared_fixtures)[-814:]:
        assert treebank_tokenize(ln) == treebank_words(ln)


def test_sentence_split_keeps_abbreviations():
    assert split_sentences("Mr. Smith lives in the U.S. now. He left! Fine") == [
        "Mr. Smith lives in the U.S. now.", "He left!", "Fine"]


@pytest.mark.parametrize("text, tokens", [
    ("It costs $3.50, ok.", 'It costs $ 3.50 , ok .'),
    ("A-1 (x) 1,000 end.", "A-1 ( x ) 1,000 end ."),
    ("&quot;q&quot; 20-25", '" q " 20 - 25'),
])
def test_mteval_tokenize(text, tokens):
    # by the rules of mteval-v13a's tokenization (punctuation split; '.'/',' kept between
    # digits; a dash after a digit split off)
    assert mteval_tokenize(text) == tokens
