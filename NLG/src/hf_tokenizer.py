"""A Hugging Face tokenizer in the NLG data steps (`gpt2_encode.py --tokenizer hf:...`,
`gpt2_decode.py --tokenizer hf:...`), with the GPT-2 pipeline's layout:

    context    = LEAD + tok(context) (+ [eos] with --add_bos: the separator)
    completion = tok(SPACE + completion) (+ [eos] with --add_eos)

eos is the tokenizer's own end-of-sequence id (SmolLM2: <|im_end|>), as <|endoftext|> is GPT-2's.
LEAD: the special tokens the tokenizer itself puts before a text (Llama 2/3: the BOS token;
GPT-2 and SmolLM2: none), so the model sees the sequence start it was trained with.
SPACE, the leading-space rule: the completion is tokenized as it reads after the context in
running text. GPT-2's BPE (and every byte-level BPE: SmolLM2, Llama 3, Qwen) marks a word start
by its preceding space, so the completion gets " " + completion, as Microsoft's script does;
a sentencepiece tokenizer that adds the word-start mark itself (Llama 2, Mistral, Gemma) gets
the completion as it is, since " " + completion would add a second, stray space token. The rule
is read off the tokenizer, not its class: if tok("a b") == tok("a") + tok(" b") the space
belongs to the next word (byte-level), if tok("a b") == tok("a") + tok("b") the tokenizer
adds it; a tokenizer that does neither is refused with an error.

Decoding cuts a prediction at its first eos id, then detokenizes the rest (gpt2_decode.py then
cuts at the first blank line, as for GPT-2).
"""
from nlg.backbone import parse_hf_spec
from nlg.hf_loading import load_tokenizer

_PROBE = ("word", "next")


class HFTextCodec:
    def __init__(self, tok, source="the tokenizer"):
        self.tok, self.source = tok, source
        if tok.eos_token_id is None:
            raise ValueError(f"{source}: the tokenizer has no end-of-sequence token (the data's "
                             f"separator and end)")
        self.eos_id = int(tok.eos_token_id)
        self.lead = self._lead_ids()
        self.space = self._completion_space()

    @classmethod
    def from_spec(cls, text, flag="--tokenizer"):
        spec = parse_hf_spec(text, flag)
        return cls(load_tokenizer(spec, flag), f"{flag} {spec}")

    def ids(self, text):
        return list(self.tok.encode(text, add_special_tokens=False))

    def _lead_ids(self):
        plain = self.ids(_PROBE[0])
        full = list(self.tok.encode(_PROBE[0], add_special_tokens=True))
        for i in range(len(full) - len(plain) + 1):
            if full[i:i + len(plain)] == plain:
                return full[:i]
        return []

    def _completion_space(self):
        a, b = _PROBE
        joined = self.ids(f"{a} {b}")
        if joined == self.ids(a) + self.ids(" " + b):
            return " "
        if joined == self.ids(a) + self.ids(b):
            return ""
        raise ValueError(f"{self.source}: cannot tell how it tokenizes a word after a space "
                         f"(tok('{a} {b}') is neither tok('{a}') + tok(' {b}') nor "
                         f"tok('{a}') + tok('{b}')), so the completion's leading space is "
                         f"undefined")

    def encode_record(self, items, add_bos, add_eos):
        context = self.lead + self.ids(items["context"]) + ([self.eos_id] if add_bos else [])
        completion = self.ids(self.space + items["completion"]) + ([self.eos_id] if add_eos else [])
        return {"context": context, "completion": completion}

    def decode(self, ids):
        ids = [int(t) for t in ids]
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        bad = [t for t in ids if not 0 <= t < len(self.tok)]
        if bad:
            raise ValueError(f"token id {bad[0]} is not in the vocabulary of {self.source} "
                             f"({len(self.tok)} tokens)")
        return self.tok.decode(ids, skip_special_tokens=False,
                               clean_up_tokenization_spaces=False)


def check_separator(path, eos_id, what, limit=200):
    """Token-id data made for another vocabulary are refused here, not trained on: when every
    context of the file's first `limit` lines ends with one same id (the separator
    gpt2_encode.py --add_bos writes) and that id is not this tokenizer's end id (50256: the
    file was encoded with GPT-2's BPE)."""
    import json
    ends = set()
    with open(path, encoding="utf8") as f:
        for i, line in enumerate(f):
            if i >= limit:
                break
            try:
                context = json.loads(line).get("context")
            except (ValueError, AttributeError):
                return                      # the data reader reports malformed lines
            if isinstance(context, list) and context:
                ends.add(context[-1])
    if len(ends) == 1 and eos_id not in ends:
        raise ValueError(f"{path}: every context ends with id {ends.pop()}, not the end id "
                         f"{eos_id} of {what}: the file was encoded with another vocabulary "
                         f"(encode it with gpt2_encode.py --tokenizer {what})")
