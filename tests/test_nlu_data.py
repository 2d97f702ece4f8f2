"""GLUE TSV reading, the RoBERTa BPE input format, and the GLUE metrics."""
import json
import math

import numpy as np
import pytest

from nlu.glue_data import (RobertaTokenizer, load_split, num_labels, read_tsv,  # noqa: E402
                       task_spec)
from nlu.glue_metrics import (accuracy, average_ranks, f1_binary, glue_metrics,  # noqa: E402
                          matthews_corr, pearson, spearman)


# -- reading -------------------------------------------------------------------------------------

@pytest.mark.parametrize("task,n_train,n_dev,first_dev", [
    ("cola", 8551, 1043, "The sailors rode the breeze clear of the rocks."),
    ("mrpc", 3667, 408, "He said the foodservice pie business doesn 't fit the company 's "
                        "long-term growth strategy ."),
    ("rte", 2490, 277, "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung "
                       "cancer at age 44, according to the Christopher Reeve Foundation."),
    ("stsb", 5749, 1500, "A man with a hard hat is dancing."),
    ("sst2", 67349, 872, "it 's a charming and often affecting journey . "),
])
def test_shared_glue_files(shared_data, task, n_train, n_dev, first_dev):
    glue = str(shared_data / "glue")
    train = load_split(glue, task, "train")["train"]
    dev = load_split(glue, task, "dev")["dev"]
    assert (len(train), len(dev)) == (n_train, n_dev)
    assert dev[0].text_a == first_dev
    if task == "stsb":
        assert dev[0].label == 5.0 and num_labels(task) == 1
    else:
        assert all(e.label in (0.0, 1.0) for e in train)
    assert (dev[0].text_b is None) == (task in ("cola", "sst2"))


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_layouts_of_mnli_qnli_qqp(tmp_path):
    mnli = tmp_path / "MNLI"
    mnli.mkdir()
    head = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
            "sentence1_parse\tsentence2_parse\tsentence1\tsentence2")
    _write(mnli / "train.tsv", [head + "\tlabel1\tgold_label",
                                "0\t1\t2\tgov\tb1\tb2\tp1\tp2\tPremise.\tHypothesis.\tneutral\tneutral"])
    dev_head = head + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"
    row = "0\t1\t2\tfiction\tb1\tb2\tp1\tp2\tA cat.\tAn animal.\t" + "\t".join(["entailment"] * 6)
    _write(mnli / "dev_matched.tsv", [dev_head, row])
    _write(mnli / "dev_mismatched.tsv", [dev_head, row.replace("entailment", "contradiction")])
    dev = load_split(str(tmp_path), "mnli", "dev")
    assert list(dev) == ["dev_matched", "dev_mismatched"]
    assert (dev["dev_matched"][0].text_a, dev["dev_matched"][0].text_b) == ("A cat.", "An animal.")
    spec = task_spec("mnli")
    assert spec.labels[int(dev["dev_matched"][0].label)] == "entailment"
    assert spec.labels[int(dev["dev_mismatched"][0].label)] == "contradiction"
    assert load_split(str(tmp_path), "MNLI", "train")["train"][0].label == 2.0   # neutral

    q = _write(tmp_path / "qnli.tsv", ["index\tquestion\tsentence\tlabel",
                                       "0\tWhy?\tBecause.\tnot_entailment"])
    e = read_tsv(q, "qnli")[0]
    assert (e.text_a, e.text_b, e.label) == ("Why?", "Because.", 1.0)
    qq = _write(tmp_path / "qqp.tsv", ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                                       "5\t1\t2\tHow?\tHow so?\t1"])
    e = read_tsv(qq, "qqp")[0]
    assert (e.text_a, e.text_b, e.label) == ("How?", "How so?", 1.0)


def test_malformed_lines_name_file_and_line(tmp_path):
    p = _write(tmp_path / "train.tsv", ["index\tsentence1\tsentence2\tlabel",
                                        "0\ta\tb\tentailment", "1\tonly two"])
    with pytest.raises(ValueError, match=r"train\.tsv:3: expected 4 tab-separated fields"):
        read_tsv(p, "rte")
    p = _write(tmp_path / "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tmaybe"])
    with pytest.raises(ValueError, match=r"dev\.tsv:2: label 'maybe'"):
        read_tsv(p, "rte")
    p = _write(tmp_path / "cola.tsv", ["src\t1\t\tfine.", "src\t1\tfine."])
    with pytest.raises(ValueError, match=r"cola\.tsv:2"):
        read_tsv(p, "cola")
    p = _write(tmp_path / "sts.tsv", ["\t".join("abcdefghij"), "\t".join("0123456789")[:-1] + "x"])
    with pytest.raises(ValueError, match=r"sts\.tsv:2: score 'x'"):
        read_tsv(p, "stsb")
    with pytest.raises(ValueError, match="unknown GLUE task"):
        task_spec("squad")
    with pytest.raises(FileNotFoundError, match="train.tsv"):
        load_split(str(tmp_path / "nowhere"), "rte", "train")


# -- tokenizer -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def roberta_like_vocab(shared_data, tmp_path_factory):
    """GPT-2's BPE with RoBERTa's special-id layout (<s>=0, <pad>=1, </s>=2, <unk>=3, ids shifted
    like fairseq's dictionary), written as Hugging Face's vocab.json + merges.txt."""
    d = tmp_path_factory.mktemp("roberta_vocab")
    enc = json.loads((shared_data / "vocab" / "encoder.json").read_text(encoding="utf-8"))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for tok, i in sorted(enc.items(), key=lambda kv: kv[1]):
        vocab[tok] = i + 4
    vocab["<mask>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (d / "merges.txt").write_bytes((shared_data / "vocab" / "vocab.bpe").read_bytes())
    return d


def test_tokenizer_matches_huggingface_roberta(roberta_like_vocab):
    transformers = pytest.importorskip("transformers")
    d = roberta_like_vocab
    hf = transformers.RobertaTokenizer(vocab=str(d / "vocab.json"), merges=str(d / "merges.txt"))
    ours = RobertaTokenizer(str(d))
    assert (ours.bos_id, ours.pad_id, ours.eos_id) == (0, 1, 2)
    pairs = [("Hello world, it's 2024!", None),
             ("The cat sat.", "A cat was sitting on the mat, wasn't it?"),
             ("naïve café — déjà vu", "x"),
             ("one two three four five six seven eight nine ten eleven twelve", "a b c d e f"),
             ("short", "a much longer second sentence that needs to be truncated a lot")]
    for max_len in (64, 12, 9):
        for a, b in pairs:
            ref = hf(a, b, truncation=True, max_length=max_len)["input_ids"]
            assert ours.encode_pair(a, b, max_len) == ref, (a, b, max_len)
    # Longest-first truncation over every length combination (" a" is one token per word).
    for na in range(1, 9):
        for nb in range(1, 9):
            a, b = "x" + " a" * (na - 1), "y" + " b" * (nb - 1)
            for max_len in (6, 7, 10, 13):
                ref = hf(a, b, truncation=True, max_length=max_len)["input_ids"]
                assert ours.encode_pair(a, b, max_len) == ref, (na, nb, max_len)


def test_tokenizer_accepts_gpt2_file_names(shared_data):
    tok = RobertaTokenizer(str(shared_data / "vocab"))
    # GPT-2's files have no RoBERTa specials: RoBERTa's ids 0, 1, 2 are used.
    ids = tok.encode_pair("Hello", "world", 16)
    assert ids[0] == 0 and ids[-1] == 2 and ids.count(2) == 3
    assert tok.bpe.decode(ids[1:ids.index(2)]) == "Hello"
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        RobertaTokenizer(str(shared_data / "glue"))


# -- metrics -------------------------------------------------------------------------------------

def _mcc_reference(pred, label):
    """Gorodkin's R_K from its covariance definition over one-hot class indicators."""
    classes = sorted(set(pred) | set(label))
    X = np.array([[p == c for c in classes] for p in pred], dtype=float)
    Y = np.array([[t == c for c in classes] for t in label], dtype=float)

    def cov(A, B):
        return sum(np.mean((A[:, k] - A[:, k].mean()) * (B[:, k] - B[:, k].mean()))
                   for k in range(len(classes)))
    d = math.sqrt(cov(X, X) * cov(Y, Y))
    return cov(X, Y) / d if d else 0.0


def _slow_ranks(x):
    return [sum(1 for y in x if y < v) + (sum(1 for y in x if y == v) + 1) / 2 for v in x]


def test_metrics_against_hand_formulas():
    rng = np.random.default_rng(0)
    pred, label = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    tp = np.sum((pred == 1) & (label == 1))
    tn = np.sum((pred == 0) & (label == 0))
    fp = np.sum((pred == 1) & (label == 0))
    fn = np.sum((pred == 0) & (label == 1))
    phi = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corr(pred, label) == pytest.approx(phi, abs=1e-12)
    assert f1_binary(pred, label) == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert accuracy(pred, label) == pytest.approx((tp + tn) / 200, abs=1e-12)
    p3, t3 = rng.integers(0, 3, 150), rng.integers(0, 3, 150)
    assert matthews_corr(p3, t3) == pytest.approx(_mcc_reference(p3, t3), abs=1e-12)
    assert matthews_corr([1, 1, 1], [0, 1, 1]) == 0.0      # constant prediction
    assert f1_binary([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == pytest.approx(2 / 3)

    x, y = rng.normal(size=100), rng.normal(size=100)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    ties = np.round(rng.normal(size=60), 1)                # many ties
    assert list(average_ranks(ties)) == _slow_ranks(list(ties))
    s_ref = np.corrcoef(_slow_ranks(list(ties)), _slow_ranks(list(y[:60])))[0, 1]
    assert spearman(ties, y[:60]) == pytest.approx(s_ref, abs=1e-12)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)     # monotone map

    m = glue_metrics("stsb", x, y)
    assert m["corr"] == pytest.approx((m["pearson"] + m["spearmanr"]) / 2)
    assert set(glue_metrics("mrpc", pred, label)) == {"accuracy", "f1", "acc_and_f1"}
    assert set(glue_metrics("cola", pred, label)) == {"mcc", "accuracy"}
    with pytest.raises(ValueError, match="no metric"):
        glue_metrics("squad", pred, label)
