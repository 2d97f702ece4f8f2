"""Formatted jsonl ({"context", "completion"} text) -> token-id jsonl for gpt2_ft.py.

    python src/gpt2_encode.py --vocab vocab --input data/e2e/train_formatted.jsonl \
        --output data/e2e/train.jsonl --add_bos --add_eos

Each output line is {"context": ids, "completion": ids}, as Microsoft's LoRA script writes it:
context = BPE(context) (+ [eot] with --add_bos), completion = BPE(" " + completion)
(+ [eot] with --add_eos), where eot is the vocabulary's "<|endoftext|>" id (50256 for GPT-2).
The context may be empty (plain-text language modelling). Other keys (e.g. "cate") are dropped.

With --tokenizer hf:<hub id | folder | file.gguf> instead of --vocab, a Hugging Face model's own
tokenizer encodes, in the same layout: its end-of-sequence id as separator and end, its own
leading special tokens (a Llama BOS), and the completion's leading space where that tokenizer
puts one (nlg/hf_tokenizer.py says how it is decided):
    python src/gpt2_encode.py --tokenizer hf:pretrained_checkpoints/SmolLM2-135M-Instruct \
        --input data/e2e/train_formatted.jsonl --output work/train.jsonl --add_bos --add_eos
"""
if not __package__:  # run as a file (python src/gpt2_encode.py), as in Microsoft's repo
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlg")
import argparse
import json
import os
import sys


from nlg import encoder
from traincore.cli import setup_parser, message, run, usage_error
from nlg.format_io import text_lines
from traincore.progress import Progress


def encode_record(enc, items, add_bos, add_eos):
    if hasattr(enc, "encode_record"):       # a Hugging Face tokenizer (nlg/hf_tokenizer.py)
        return enc.encode_record(items, add_bos, add_eos)
    eot = enc.eos_id
    context = enc.encode(items["context"]) + ([eot] if add_bos else [])
    completion = enc.encode(" " + items["completion"]) + ([eot] if add_eos else [])
    return {"context": context, "completion": completion}


def parse_line(line, path, lineno):
    try:
        items = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(items, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object with 'context' and 'completion'")
    for key in ("context", "completion"):
        if not isinstance(items.get(key), str):
            raise ValueError(f"{path}:{lineno}: key {key!r} missing or not a string")
    return items


def encode_file(enc, in_path, out_path, add_bos, add_eos, progress=True):
    """Encode a whole file; returns the number of lines written. On a bad line nothing is left
    at out_path (a partial output would look like a finished dataset)."""
    with open(in_path, "rb") as f:
        total = sum(1 for _ in f)
    tmp = out_path + ".part"
    n = 0
    try:
        with open(tmp, "w", encoding="utf8") as writer:
            with Progress(total, f"encode {os.path.basename(in_path)}", "lines",
                          enabled=progress) as bar:
                for lineno, line in text_lines(in_path):
                    items = parse_line(line.strip(), in_path, lineno)
                    writer.write(json.dumps(encode_record(enc, items, add_bos, add_eos)) + "\n")
                    n += 1
                    bar.update()
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, type=str, help="formatted jsonl ({'context', 'completion'})")
    parser.add_argument("--vocab", default=None, type=str,
                        help="folder with encoder.json and vocab.bpe (GPT-2's BPE)")
    parser.add_argument("--tokenizer", default=None, type=str,
                        help="hf:<hub id | folder | file.gguf>: a Hugging Face model's tokenizer "
                             "instead of --vocab")
    parser.add_argument("--output", required=True, type=str, help="token-id jsonl to write")
    parser.add_argument("--add_bos", action="store_true", help="end the context with <|endoftext|>")
    parser.add_argument("--add_eos", action="store_true", help="end the completion with <|endoftext|>")
    setup_parser(parser)
    args = parser.parse_args(argv)
    if (args.vocab is None) == (args.tokenizer is None):
        usage_error("gpt2_encode.py", "give --vocab DIR (GPT-2's BPE files) or --tokenizer "
                                      "hf:... (a Hugging Face tokenizer), one of them")
    try:
        if args.tokenizer is not None:
            from nlg.hf_tokenizer import HFTextCodec
            enc = HFTextCodec.from_spec(args.tokenizer)
        else:
            enc = encoder.get_encoder(args.vocab)
        encode_file(enc, args.input, args.output, args.add_bos, args.add_eos)
    except (ValueError, KeyError, OSError, ImportError) as e:
        usage_error("gpt2_encode.py", message(e))


if __name__ == "__main__":
    run("gpt2_encode.py", main)
