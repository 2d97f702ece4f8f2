"""encoder.py against Hugging Face's GPT2Tokenizer (the reference GPT-2 BPE) and the `regex`
package's \\p{L}/\\p{N} split that the original encoder uses."""
import json
import random
import sys
import unicodedata
from collections import Counter

import pytest

from nlg import encoder

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def vocab_dir(shared_data):
    return shared_data / "vocab"


@pytest.fixture(scope="module")
def enc(vocab_dir):
    return encoder.get_encoder(str(vocab_dir))


@pytest.fixture(scope="module")
def hf_tok(vocab_dir):
    return transformers.GPT2Tokenizer(str(vocab_dir / "encoder.json"), str(vocab_dir / "vocab.bpe"))


def _all_shared_texts(shared_data):
    """Every context and completion in the shared E2E / WebNLG / DART files, read from the raw
    files (not through the converters), completions with the leading space gpt2_encode adds."""
    texts = []
    with open(shared_data / "e2e" / "valid.txt", encoding="utf8") as f:
        for line in f:
            mr, ref = line.strip().split("||")
            texts += [mr, " " + ref]
    with open(shared_data / "webnlg_challenge_2017" / "dev.json", encoding="utf8") as f:
        for i, wrapper in enumerate(json.load(f)["entries"]):
            e = wrapper[str(i + 1)]
            texts.append(" | ".join(f"{t['subject']} : {t['property']} : {t['object']}"
                                    for t in e["modifiedtripleset"]))
            texts += [" " + lex["lex"] for lex in e["lexicalisations"]]
    with open(shared_data / "dart" / "dart-v1.1.1-full-dev.json", encoding="utf8") as f:
        for e in json.load(f):
            texts.append(" | ".join(f"{s} : {r.lower()} : {o}" for s, r, o in e["tripleset"]))
            texts += [" " + a["text"] for a in e["annotations"]]
    return texts


def test_ids_equal_hf_gpt2_tokenizer_on_all_shared_nlg_text(enc, hf_tok, shared_data):
    texts = _all_shared_texts(shared_data)
    assert len(texts) > 20000
    ours = [enc.encode(t) for t in texts]
    theirs = [hf_tok.convert_tokens_to_ids(hf_tok.tokenize(t)) for t in texts]
    mismatches = [(t, a, b) for t, a, b in zip(texts, ours, theirs) if a != b]
    assert not mismatches, mismatches[:3]
    # byte-level BPE is lossless
    assert all(enc.decode(ids) == t for t, ids in zip(texts, ours))


def test_ids_equal_hf_on_random_unicode(enc, hf_tok):
    rng = random.Random(0)
    pools = [
        "abcXYZ 0123456789 ,.;:!?'\"-_()[]{}|\\/@#$%^&*+=~`\n\t\r",
        "éüßñøÅçÆœ ÀÉÎÕÜ",
        "Привет мир Ελληνικά עברית العربية हिन्दी 中文字符 日本語のテキスト 한국어",
        "²³¹½¼ⅫⅣ١٢٣४५६〇",
        "\u00a0\u2003\u3000\u200b\u2028\x1c\x1f\x85\u202f",
        "😀🚀👍🏽🇩🇪 ∑∫√∞≠≤ €£¥",
        "'s 're 've 'm 'll 'd 'S n't",
    ]
    for _ in range(400):
        s = "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 40)))
        assert enc.encode(s) == hf_tok.convert_tokens_to_ids(hf_tok.tokenize(s)), repr(s)
        assert enc.decode(enc.encode(s)) == s


def test_split_matches_regex_p_classes_on_every_assigned_code_point():
    regex = pytest.importorskip("regex")
    ref = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
    ours = encoder._split_pattern()
    bad = []
    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        # Code points unassigned in this Python's Unicode tables may be letters in `regex`'s newer ones.
        if unicodedata.category(c) in ("Cn", "Cs"):
            continue
        s = f"a{c}b1{c}{c} {c}\n{c}'s"
        if ours.findall(s) != ref.findall(s):
            bad.append(hex(cp))
    assert not bad, bad[:20]


def test_encode_caches_bpe(vocab_dir):
    e = encoder.get_encoder(str(vocab_dir))
    e.encode(" internationalization internationalization")
    key = "Ġinternationalization"
    assert key in e.cache
    e.cache[key] = "Ġthe"  # a poisoned entry proves the cache is what encode reads
    assert e.encode(" internationalization") == [e.encoder["Ġthe"]]


def test_eos_id_is_read_from_vocabulary(enc):
    assert enc.eos_id == enc.encoder["<|endoftext|>"]
    assert enc.decode([enc.eos_id]) == "<|endoftext|>"


# ---------- a small vocabulary in the same file format (as the demo builds one) ----------

def _learn_small_vocab(text, n_merges):
    """Byte alphabet + n greedy BPE merges learned on `text`, "<|endoftext|>" first (id 0)."""
    b2u = encoder.bytes_to_unicode()
    words = Counter(tuple(b2u[b] for b in w.encode("utf-8")) for w in encoder._split_pattern().findall(text))
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, n in words.items():
            for p in zip(w[:-1], w[1:]):
                pairs[p] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        new = Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i < len(w) - 1 and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += n
        words = new
    vocab = {"<|endoftext|>": 0}
    for ch in b2u.values():
        vocab[ch] = len(vocab)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return vocab, merges


def _write_vocab(folder, vocab, merges, header=True):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "encoder.json").write_text(json.dumps(vocab), encoding="utf-8")
    lines = (["#version: 0.2"] if header else []) + [f"{a} {b}" for a, b in merges]
    (folder / "vocab.bpe").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_small_vocabulary_matches_hf(tmp_path, shared_data):
    text = " ".join(_all_shared_texts(shared_data)[:2000])
    vocab, merges = _learn_small_vocab(text, 120)
    _write_vocab(tmp_path, vocab, merges)
    e = encoder.get_encoder(str(tmp_path))
    assert e.eos_id == 0 and len(e.bpe_ranks) == len(merges)
    tok = transformers.GPT2Tokenizer(str(tmp_path / "encoder.json"), str(tmp_path / "vocab.bpe"))
    for s in _all_shared_texts(shared_data)[2000:2600] + ["naïve café 123 ☃"]:
        ids = e.encode(s)
        assert ids == tok.convert_tokens_to_ids(tok.tokenize(s)), s
        assert e.decode(ids) == s


def test_vocab_bpe_without_header_or_final_newline(tmp_path):
    vocab, merges = _learn_small_vocab("the theme then there the", 5)
    _write_vocab(tmp_path, vocab, merges, header=False)
    (tmp_path / "vocab.bpe").write_text("\n".join(f"{a} {b}" for a, b in merges), encoding="utf-8")
    assert len(encoder.get_encoder(str(tmp_path)).bpe_ranks) == len(merges)


def test_bad_vocab_files_name_the_file_and_line(tmp_path):
    vocab, merges = _learn_small_vocab("the theme", 3)
    _write_vocab(tmp_path, vocab, merges)
    with open(tmp_path / "vocab.bpe", "a", encoding="utf-8") as f:
        f.write("a b c\n")
    with pytest.raises(ValueError, match=r"vocab\.bpe:5: a merge rule must be two symbols"):
        encoder.get_encoder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="encoder.json"):
        encoder.get_encoder(str(tmp_path / "missing"))


def test_missing_eot_and_unknown_symbol_are_clear_errors(tmp_path):
    vocab = {ch: i for i, ch in enumerate(encoder.bytes_to_unicode().values())}
    _write_vocab(tmp_path, vocab, [("t", "h")])  # "th" is merged but not in encoder.json
    e = encoder.get_encoder(str(tmp_path))
    with pytest.raises(KeyError, match="<\\|endoftext\\|>"):
        e.eos_id
    with pytest.raises(KeyError, match="'th'.*not in"):
        e.encode("the")
    with pytest.raises(KeyError, match="token id 99999"):
        e.decode([99999])
