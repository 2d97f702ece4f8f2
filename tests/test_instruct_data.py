"""NLG/MetaMathQA/instruct_data.py against transcriptions of QLoRA's qlora.py (NOLA's
llama/qlora.py): the text of every dataset format, the collator's ids, labels and truncation,
the train / eval split, and errors that name the file and the row. Offline: a character-level
tokenizer built here, and a stand-in for `datasets.load_dataset` to check what is asked of the
hub."""
import copy
import json
import sys
import types

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

import instruct_data as data  # noqa: E402

# ---------------------------------------------------------------- qlora.py, transcribed
# llama/qlora.py lines 534-552 (the prompt and extract_alpaca_dataset) and 619-642 (the
# lambdas of format_dataset), applied to one row.
QLORA_PROMPT = {
    "prompt_input": (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response: "
    ),
    "prompt_no_input": (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response: "
    ),
}


def qlora_format(x, fmt):
    if fmt in ("alpaca", "alpaca-clean"):
        if x.get("input", "") != "":
            prompt_format = QLORA_PROMPT["prompt_input"]
        else:
            prompt_format = QLORA_PROMPT["prompt_no_input"]
        return {"input": prompt_format.format(**x), "output": x["output"]}
    if fmt == "chip2":
        return {"input": x["text"].split("\n<bot>: ")[0].replace("<human>: ", ""),
                "output": x["text"].split("\n<bot>: ")[1]}
    if fmt == "self-instruct":
        return {"input": x["prompt"], "output": x["completion"]}
    if fmt == "hh-rlhf":
        return {"input": "", "output": x["chosen"]}
    if fmt == "oasst1":
        return {"input": "", "output": x["text"]}
    return {"input": x["input"], "output": x["output"]}


def qlora_collate(tokenizer, instances, source_max_len, target_max_len, train_on_source,
                  predict_with_generate):
    """DataCollatorForCausalLM.__call__, qlora.py lines 472-515."""
    from torch.nn.utils.rnn import pad_sequence
    sources = [f"{tokenizer.bos_token}{example['input']}" for example in instances]
    targets = [f"{example['output']}{tokenizer.eos_token}" for example in instances]
    tokenized_sources_with_prompt = tokenizer(sources, max_length=source_max_len,
                                              truncation=True, add_special_tokens=False)
    tokenized_targets = tokenizer(targets, max_length=target_max_len, truncation=True,
                                  add_special_tokens=False)
    input_ids, labels = [], []
    for tokenized_source, tokenized_target in zip(tokenized_sources_with_prompt["input_ids"],
                                                  tokenized_targets["input_ids"]):
        if not predict_with_generate:
            input_ids.append(torch.tensor(tokenized_source + tokenized_target))
            if not train_on_source:
                labels.append(torch.tensor([-100 for _ in range(len(tokenized_source))]
                                           + copy.deepcopy(tokenized_target)))
            else:
                labels.append(torch.tensor(copy.deepcopy(tokenized_source + tokenized_target)))
        else:
            input_ids.append(torch.tensor(tokenized_source))
    input_ids = pad_sequence(input_ids, batch_first=True, padding_value=tokenizer.pad_token_id)
    labels = pad_sequence(labels, batch_first=True, padding_value=-100) \
        if not predict_with_generate else None
    out = {"input_ids": input_ids, "attention_mask": input_ids.ne(tokenizer.pad_token_id)}
    if labels is not None:
        out["labels"] = labels
    return out


# ---------------------------------------------------------------- fixtures

def char_tokenizer():
    """One token per character, LLaMA's special-token names; a dedicated [PAD] as qlora.py adds."""
    from tokenizers import Regex, models, pre_tokenizers
    specials = ["<unk>", "<s>", "</s>", "[PAD]"]
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    tk = tokenizers.Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + chars)},
                                               unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>",
                                                eos_token="</s>", pad_token="[PAD]",
                                                unk_token="<unk>")


ROWS = {
    "alpaca": [{"instruction": "Add 2 and 3.", "input": "", "output": "5"},
               {"instruction": "Translate.", "input": "bonjour", "output": "hello"},
               {"instruction": "Say {x}.", "input": "a {b} c", "output": "ok"}],
    "chip2": [{"text": "<human>: Hi there\n<bot>: Hello!"},
              {"text": "<human>: Two?\n<bot>: One\n<bot>: Two"}],
    "self-instruct": [{"prompt": "Write a haiku.", "completion": "Leaves fall.", "id": 3}],
    "hh-rlhf": [{"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "no"}],
    "oasst1": [{"text": "### Human: Why?### Assistant: Because."}],
    "input-output": [{"input": "2+2=", "output": "4"}, {"input": "", "output": "free text"}],
}
ROWS["alpaca-clean"] = ROWS["alpaca"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ---------------------------------------------------------------- formats

@pytest.mark.parametrize("fmt", data.FORMATS)
def test_every_format_gives_qlora_text(tmp_path, fmt):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS[fmt])
    got = data.load_splits(path, fmt, local_holdout=0)["train"]
    assert list(got) == [qlora_format(r, fmt) for r in ROWS[fmt]]
    assert got.lengths == [len(r["input"]) + len(r["output"]) for r in got]   # characters


def test_prompt_dict_is_qlora_text():
    assert data.ALPACA_PROMPT_DICT == QLORA_PROMPT


def test_json_list_and_csv_tsv_read_as_json_lines(tmp_path):
    rows = ROWS["input-output"]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "a.csv").write_text('input,output\n2+2=,4\n,"free text"\n')
    (tmp_path / "a.tsv").write_text("input\toutput\n2+2=\t4\n\tfree text\n")
    for name in ("a.json", "a.csv", "a.tsv"):
        # a CSV's empty cell is "", not pandas' NaN -> "nan" (a fixed qlora.py quirk)
        assert list(data.load_splits(str(tmp_path / name), local_holdout=0)["train"]) == rows


def test_named_dataset_from_a_local_copy(tmp_path):
    """--dataset alpaca with a local copy of its rows: the alpaca format and no holdout."""
    path = write_jsonl(tmp_path / "alpaca_data.jsonl", ROWS["alpaca"])
    splits = data.load_splits("alpaca", data_file=path)
    assert list(splits) == ["train"]
    assert list(splits["train"]) == [qlora_format(r, "alpaca") for r in ROWS["alpaca"]]


def test_hub_names_ask_for_qlora_datasets(monkeypatch):
    calls = []

    def load_dataset(path, /, **kwargs):
        calls.append((path, kwargs))
        return {"train": [ROWS["oasst1"][0]], "test": [ROWS["oasst1"][0]]}
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    splits = data.load_splits("oasst1")
    assert calls == [("timdettmers/openassistant-guanaco", {})]
    assert set(splits) == {"train", "test"}
    assert splits["train"][0] == qlora_format(ROWS["oasst1"][0], "oasst1")
    for name, want in [("alpaca", ("tatsu-lab/alpaca", {})),
                       ("alpaca-clean", ("yahma/alpaca-cleaned", {})),
                       ("chip2", ("laion/OIG", {"data_files": "unified_chip2.jsonl"})),
                       ("self-instruct", ("yizhongw/self_instruct", {"name": "self_instruct"})),
                       ("hh-rlhf", ("Anthropic/hh-rlhf", {}))]:
        calls.clear()
        with pytest.raises(ValueError):      # the stand-in serves oasst1 rows only
            data.load_splits(name)
        assert calls == [want]
    calls.clear()
    data.load_splits("someone/instructions", "oasst1")
    assert calls == [("someone/instructions", {})]


# ---------------------------------------------------------------- splits

def test_local_file_holds_ten_percent_out_as_qlora(tmp_path):
    """qlora.py's local_dataset: train_test_split(test_size=0.1), its generator seeded (through
    numpy's global state) with the run's seed: ceil(0.1 n) rows out, the permutation's head."""
    rows = [{"input": f"q{i}", "output": f"a{i}"} for i in range(23)]
    path = write_jsonl(tmp_path / "io.jsonl", rows)
    splits = data.load_splits(path, seed=7)
    perm = __import__("numpy").random.default_rng(7).permutation(23).tolist()
    assert [r["input"] for r in splits["test"]] == [f"q{i}" for i in perm[:3]]
    assert [r["input"] for r in splits["train"]] == [f"q{i}" for i in perm[3:]]


def test_train_eval_split_as_make_data_module():
    rows = data.Examples({"input": f"q{i}", "output": "a"} for i in range(40))
    train, ev = data.train_eval_split({"train": rows}, do_eval=True, eval_dataset_size=8,
                                      max_eval_samples=5, max_train_samples=30)
    perm = __import__("numpy").random.default_rng(42).permutation(40).tolist()
    assert [r["input"] for r in ev] == [f"q{i}" for i in perm[:5]]
    assert [r["input"] for r in train] == [f"q{i}" for i in perm[8:38]]
    # an "eval" split is used as it is (a "test" split is not: qlora.py looks for "eval")
    other = data.Examples([{"input": "e", "output": "f"}])
    train, ev = data.train_eval_split({"train": rows, "eval": other}, do_eval=True)
    assert list(train) == list(rows) and list(ev) == list(other)
    train, ev = data.train_eval_split({"train": rows, "test": other})
    assert list(train) == list(rows) and ev is None


# ---------------------------------------------------------------- collator

EXAMPLES = [{"input": "Q: 2+2?\nA:", "output": " 4"},
            {"input": "A much longer question here?", "output": " a long long answer text"},
            {"input": "", "output": "free"}]


@pytest.mark.parametrize("train_on_source", [False, True])
@pytest.mark.parametrize("lens", [(384, 512), (12, 9)], ids=["no-cut", "truncated"])
def test_collator_equals_qlora(train_on_source, lens):
    tok = char_tokenizer()
    got = data.InstructCollator(tok, *lens, train_on_source=train_on_source)(EXAMPLES)
    want = qlora_collate(tok, EXAMPLES, *lens, train_on_source, False)
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    gen = data.InstructCollator(tok, *lens, predict_with_generate=True)(EXAMPLES)
    want = qlora_collate(tok, EXAMPLES, *lens, train_on_source, True)
    assert set(gen) == {"input_ids", "attention_mask"}
    assert torch.equal(gen["input_ids"], want["input_ids"])


def test_labels_cover_the_target_and_truncation_cuts_each_side():
    tok = char_tokenizer()
    bos, eos = tok.bos_token_id, tok.eos_token_id
    ex = EXAMPLES[1]
    batch = data.InstructCollator(tok, 384, 512)([ex])
    n_src = 1 + len(ex["input"])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert ids[0] == bos and ids[-1] == eos and len(ids) == n_src + len(ex["output"]) + 1
    assert labels[:n_src] == [-100] * n_src and labels[n_src:] == ids[n_src:]
    cut = data.InstructCollator(tok, 10, 6)([ex])
    ids = cut["input_ids"][0].tolist()
    # source: BOS + the input's first 9 characters; target: 6 tokens, so no EOS any more
    assert tok.convert_ids_to_tokens(ids) == ["<s>"] + list(ex["input"][:9]) + list(ex["output"][:6])
    assert cut["labels"][0].tolist() == [-100] * 10 + ids[10:]
    on_src = data.InstructCollator(tok, 10, 6, train_on_source=True)([ex])
    assert on_src["labels"][0].tolist() == ids


def test_attention_mask_from_lengths_when_pad_is_eos():
    """pad = EOS (a common setup): qlora.py's input_ids.ne(pad) would hide each row's EOS; the
    mask here covers every real token."""
    tok = char_tokenizer()
    tok.pad_token = tok.eos_token
    batch = data.InstructCollator(tok, 384, 512)(EXAMPLES[:2])
    lengths = [1 + len(e["input"]) + len(e["output"]) + 1 for e in EXAMPLES[:2]]
    assert batch["attention_mask"].sum(1).tolist() == lengths


def test_collator_needs_pad_and_eos():
    tok = char_tokenizer()
    tok.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        data.InstructCollator(tok, 8, 8)
    with pytest.raises(ValueError, match="source_max_len"):
        data.InstructCollator(char_tokenizer(), 0, 8)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("fmt,rows,match", [
    ("alpaca", [{"instruction": "a", "output": "b"}, {"input": "x", "output": "y"}],
     r"row 2: field 'instruction' is missing"),
    ("chip2", [{"text": "<human>: hi\n<bot>: yo"}, {"text": "<human>: no bot here"}],
     r"row 2: chip2 text lacks the bot turn"),
    ("input-output", [{"input": "a", "output": 3}], r"row 1: field 'output' is a int"),
    ("self-instruct", [{"prompt": "a"}], r"row 1: field 'completion' is missing"),
    ("hh-rlhf", [["not", "an", "object"]], r"row 1: not an object"),
])
def test_bad_rows_name_file_and_row(tmp_path, fmt, rows, match):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match=match) as e:
        data.load_splits(path, fmt, local_holdout=0)
    assert path in str(e.value)


def test_bad_names_and_files(tmp_path):
    with pytest.raises(ValueError, match="neither one of qlora.py's datasets"):
        data.load_splits("no-such-dataset")
    with pytest.raises(ValueError, match="--dataset_format 'alpacca'"):
        data.load_splits("alpaca", "alpacca", data_file=write_jsonl(tmp_path / "a.jsonl",
                                                                      ROWS["alpaca"]))
    (tmp_path / "a.parquet").write_text("x")
    with pytest.raises(ValueError, match="unsupported dataset file"):
        data.load_splits(str(tmp_path / "a.parquet"))
    (tmp_path / "broken.jsonl").write_text('{"input": "a", "output": "b"}\n{"input": \n')
    with pytest.raises(ValueError, match="broken.jsonl:2"):
        data.load_splits(str(tmp_path / "broken.jsonl"), local_holdout=0)
    three = data.Examples({"input": str(i), "output": "o"} for i in range(3))
    with pytest.raises(ValueError, match=r"cannot hold 3 of 3 rows out"):
        data.train_eval_split({"train": three}, do_eval=True, eval_dataset_size=3)
