"""nlg.format_e2e_csv / nlg.e2e_tokenize: the official E2E release CSVs in Microsoft's line format."""
import csv
import subprocess
import sys

import pytest

from nlg import e2e_tokenize, format_e2e_csv


def _devset(shared_data):
    dev = shared_data / "e2e" / "official" / "devset.csv"
    if not dev.is_file():
        pytest.skip(f"{dev} not found: the E2E release CSVs sit in ../shared/data/e2e/official in CI")
    return dev


def test_devset_converts_to_microsofts_valid_txt(shared_data, tmp_path):
    """Microsoft's valid.txt is the release's devset.csv, tokenized: the conversion gives it back
    byte for byte (every one of its lines, in order)."""
    out = tmp_path / "valid.txt"
    n = format_e2e_csv.convert(str(_devset(shared_data)), str(out))
    ours = out.read_text(encoding="utf8").splitlines()
    theirs = (shared_data / "e2e" / "valid.txt").read_text(encoding="utf8").splitlines()
    assert n == len(ours) == len(theirs)
    differ = [(i + 1, a, b) for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not differ, f"{len(differ)} lines differ, first: {differ[:3]}"
    assert out.read_bytes() == (shared_data / "e2e" / "valid.txt").read_bytes()


TRICKY = [
    "Very bad acting!!! I promise.", "It is 5. in town. A. Smith eats. J. Bach. 3. 4 ok",
    "e.g. this. Mr. Smith.", 'He said "food." next one.', "(Sent1.) Sent2.", "rating.. It is.",
    "Is it?5. in", "x. . . y", "Wait... what? Yes!", "food.'s thing. ok", "A. 5 stars",
    "No. 5 is here. no. 6", "food.) next", "a.) ) b. c", 'x." "y. z', "end.)",
    "The price is 20-25. it is cheap.", "Rated 5, out of 5. , yes.",
]


def test_sentences_are_punkts(shared_data):
    """The sentence splitter against NLTK's Punkt with its untrained defaults (the splitter
    Microsoft's files were made with), on every devset reference and on the corner cases."""
    punkt = pytest.importorskip("nltk.tokenize.punkt")
    reference = punkt.PunktSentenceTokenizer()
    with open(_devset(shared_data), encoding="utf8", newline="") as f:
        texts = [row["ref"] for row in csv.DictReader(f)] + TRICKY
    differ = [t for t in texts if e2e_tokenize.split_sentences(t) != reference.tokenize(t)]
    assert not differ, differ[:5]


@pytest.mark.parametrize("text, tokens", [
    # clitics split Moses' way (not Treebank's `is n't`); hyphens between letters or digits split
    ("Alimentum isn't family-friendly.", "Alimentum isn 't family - friendly . "),
    ("The 1990's pub called 'The Eagle'.", "The 1990 's pub called ' The Eagle ' . "),
    ("Prices: £20-£25 (cheap)?Yes", "Prices : £ 20- £ 25 ( cheap ) ? Yes "),
    ("It costs £5,300, or 30.99 a head!", "It costs £ 5,300 , or 30.99 a head ! "),
    # Punkt ends a sentence after `food.` even before a lower-case word, and Moses then splits the
    # period off the sentence's last word; after a number or an initial it does not
    ("It serves English food. it is cheap", "It serves English food . it is cheap "),
    ("It is rated 1 out of 5. in the city centre.", "It is rated 1 out of 5. in the city centre . "),
    ("Ask J. Bach.", "Ask J. Bach . "),
    ("Near St. John's College.", "Near St . John 's College . "),
    ("It is rated average.. It is cheap.", "It is rated average .. It is cheap . "),
    ("Wait... what?", "Wait ... what ? "),
    ("(Sent1.) Sent2.", "( Sent1 . ) Sent2 . "),
])
def test_reference_tokenization(text, tokens):
    assert e2e_tokenize.tokenize_reference(text) == tokens


def test_mr_attributes_renamed_and_values_tokenized():
    mr = "name[Cocum], eatType[coffee shop], priceRange[£20-25], customer rating[high], familyFriendly[no]"
    assert format_e2e_csv.convert_mr(mr) == \
        "name : Cocum | Type : coffee shop | price : £ 20 - 25 | customer rating : high | family friendly : no"


GOOD_ROW = '"name[A], food[Thai]","A serves Thai food."\n'


@pytest.mark.parametrize("body, where, what", [
    ("mr,text\n" + GOOD_ROW, ":1:", "no column ref"),
    ("mr,ref\n" + GOOD_ROW + '"name[B]","B.",extra\n', ":3:", "row 2 has 3 fields"),
    ("mr,ref\n" + GOOD_ROW + '"name B","B is here."\n', ":3: row 2:", "is not 'attribute[value]"),
    ("mr,ref\n" + GOOD_ROW + '"name[B], area[x","B is here."\n', ":3: row 2:", "is not 'attribute[value]"),
    ("mr,ref\n" + '"name[B]",""\n', ":2: row 1:", "empty ref"),
    ("mr,ref\n" + '"name[B]","B||C"\n', ":2: row 1:", "ref holds '||'"),
    ("mr,ref\n" + GOOD_ROW + '"name[B],"B is here.\n', ":", "not valid CSV"),
    ("", ":", "empty file"),
    ("mr,ref\n", ":", "no data rows"),
])
def test_bad_csv_names_file_and_row(tmp_path, body, where, what):
    src, out = tmp_path / "devset.csv", tmp_path / "valid.txt"
    src.write_text(body, encoding="utf8")
    with pytest.raises(ValueError) as e:
        format_e2e_csv.convert(str(src), str(out))
    assert str(e.value).startswith(f"{src}{where}") and what in str(e.value), str(e.value)
    assert not out.exists()   # nothing is written for a bad file


def test_command_line(repo_root, tmp_path):
    src, out = tmp_path / "trainset.csv", tmp_path / "train.txt"
    src.write_bytes(("\ufeffmr,ref\n" + GOOD_ROW).encode("utf8"))   # a byte-order mark is allowed
    r = subprocess.run([sys.executable, "-m", "nlg.format_e2e_csv", str(src), str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert out.read_text(encoding="utf8") == "name : A | food : Thai||A serves Thai food . \n"
    src.write_bytes(b"mr,ref\n\"name[A]\",\"caf\xe9\"\n")   # Latin-1, not UTF-8
    r = subprocess.run([sys.executable, "-m", "nlg.format_e2e_csv", str(src), str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and f"{src}:2: not UTF-8" in r.stderr
