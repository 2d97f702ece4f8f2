"""Beam-search output ({"id", "predict": token ids} per line) -> reference and prediction files.

E2E (scored with e2e-metrics' measure_scores.py):
    python src/gpt2_decode.py --vocab ./vocab --sample_file work/predict.jsonl \
        --input_file ./data/e2e/test_formatted.jsonl --output_ref_file e2e_ref.txt --output_pred_file e2e_pred.txt
WebNLG / DART (scored with GenerationEval):
    python src/gpt2_decode.py --vocab ./vocab --sample_file work/predict.jsonl \
        --input_file ./data/webnlg_challenge_2017/test_formatted.jsonl --ref_type webnlg --ref_num 6 \
        --output_ref_file eval/GenerationEval/data/references_webnlg \
        --output_pred_file eval/GenerationEval/data/hypothesis_webnlg --tokenize --lower [--filter seen]

Same layout as Microsoft's LoRA script. References are grouped by context (or by the ids of
--ref_unique_file, one per input line), in order of first appearance; a sample's "id" is the
index of a line of --input_file, and the last sample for a context wins (beam search writes one
line per input line, the same prediction for every line of a context). Predictions and references
are cut at "<|endoftext|>", then at the first blank line, then stripped.
  e2e:          --output_ref_file gets each context's references, one per line, then a blank line.
  webnlg/dart:  --output_ref_file is a folder with reference0 .. reference{ref_num-1}, one line
                per context; a context with fewer references repeats its first one.
--output_pred_file gets one prediction per context. --lower lowercases; --tokenize splits at every
non-word character (re's \\W) and single-spaces the result, as the reference does (no NLTK).
--tokenizer hf:<hub id | folder | file.gguf> instead of --vocab detokenizes with a Hugging Face
model's tokenizer (the one gpt2_encode.py --tokenizer encoded with): a prediction is cut at its
first end-of-sequence id, detokenized, then cut at the first blank line (nlg/hf_tokenizer.py).
"""
if not __package__:  # run as a file (python src/gpt2_decode.py), as in Microsoft's repo
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from traincore.entry import as_package
    as_package(__file__, "nlg")
import argparse
import json
import os
import re
import sys

from nlg import encoder
from traincore.cli import setup_parser, message, run, usage_error
from nlg.tasks import TASKS

EOT = "<|endoftext|>"


def standard_tokenize(sent):
    """Split off every non-word character and normalise whitespace to single spaces."""
    return " ".join(" ".join(re.split(r"(\W)", sent)).split())


def post_process(sent, is_tokenize, is_lower):
    if is_lower:
        sent = sent.lower()
    if is_tokenize:
        sent = standard_tokenize(sent)
    return sent


def cut(text):
    """Text up to the first <|endoftext|>, then up to the first blank line, stripped, on one
    line: a line break left inside (a model that writes "\n" before its end id) would split the
    prediction over two lines of the prediction file, which holds one line per context (the
    scorer then refuses the file: more predictions than contexts), so it becomes a space."""
    return re.sub(r"\s*[\r\n]\s*", " ", text.split(EOT)[0].split("\n\n")[0].strip())


def _load_json_line(line, path, lineno):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None


def read_ref_unique(path):
    ids = []
    with open(path, "r", encoding="utf8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                ids.append(int(line.strip()))
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected an integer id, got {line.strip()!r}") from None
    return ids


def read_references(input_file, filter_, ref_unique=None):
    """(keys of all input lines, {key: [references]} for the kept lines, in first-seen order)."""
    keys = []
    refer = {}
    with open(input_file, "r", encoding="utf8") as f:
        for lineno, line in enumerate(f, 1):
            items = _load_json_line(line.strip(), input_file, lineno)
            if not isinstance(items, dict) or not isinstance(items.get("context"), str) \
                    or not isinstance(items.get("completion"), str):
                raise ValueError(f"{input_file}:{lineno}: expected string keys 'context' and 'completion'")
            if ref_unique is None:
                key = items["context"]
            else:
                if lineno > len(ref_unique):
                    raise ValueError(f"{input_file}:{lineno}: --ref_unique_file has only {len(ref_unique)} ids")
                key = ref_unique[lineno - 1]
            keys.append(key)
            if filter_ == "all":
                keep = True
            else:
                if "cate" not in items:
                    raise ValueError(f"{input_file}:{lineno}: --filter {filter_} needs a 'cate' key "
                                     "(written by format_converting_webnlg.py)")
                keep = bool(items["cate"]) == (filter_ == "seen")
            if keep:
                refer.setdefault(key, []).append(cut(items["completion"]))
    return keys, refer


def read_samples(sample_file, keys, refer, enc, input_file):
    """{key: decoded prediction} for the keys in `refer`."""
    samples = {}
    with open(sample_file, "r", encoding="utf8") as f:
        for lineno, line in enumerate(f, 1):
            items = _load_json_line(line.strip(), sample_file, lineno)
            if not isinstance(items, dict) or "id" not in items or "predict" not in items:
                raise ValueError(f"{sample_file}:{lineno}: expected keys 'id' and 'predict'")
            _id = items["id"]
            if not isinstance(_id, int) or isinstance(_id, bool) or not 0 <= _id < len(keys):
                raise ValueError(f"{sample_file}:{lineno}: id {_id!r} is not a line index of {input_file} "
                                 f"({len(keys)} lines)")
            key = keys[_id]
            if key in refer:
                try:
                    samples[key] = cut(enc.decode(items["predict"]))
                except (KeyError, TypeError, ValueError) as e:
                    raise ValueError(f"{sample_file}:{lineno}: bad 'predict' ({e})") from None
    missing = [k for k in refer if k not in samples]
    if missing:
        raise ValueError(f"{sample_file}: no prediction for {len(missing)} of {len(refer)} contexts of "
                         f"{input_file}, e.g. {missing[0]!r}")
    return samples


def write_outputs(refer, samples, ref_type, ref_num, output_ref_file, output_pred_file, tokenize, lower):
    def pp(s):
        return post_process(s, tokenize, lower)

    # GenerationEval's data/ folder may not exist yet (download_evalscript.sh not run).
    one_file = TASKS[ref_type].references == "e2e"   # else reference0..N-1 in a folder
    for path in (output_pred_file, output_ref_file if one_file else None):
        if path and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(output_pred_file, "w", encoding="utf8") as pred_writer:
        if one_file:
            # Blank lines separate the contexts' reference blocks, so an empty reference would
            # end its block early and shift every later context onto the wrong references.
            for key, refs in refer.items():
                if any(not pp(r).strip() for r in refs):
                    raise ValueError(f"the input file's context {key[:60]!r} has an empty "
                                     f"reference, which E2E's blank-line-separated "
                                     f"{output_ref_file} cannot hold: remove or fill it")
            with open(output_ref_file, "w", encoding="utf8") as ref_writer:
                for key, refs in refer.items():
                    for r in refs:
                        ref_writer.write(pp(r) + "\n")
                    ref_writer.write("\n")
                    pred_writer.write(pp(samples[key]) + "\n")
        else:
            os.makedirs(output_ref_file, exist_ok=True)
            writers = [open(os.path.join(output_ref_file, f"reference{i}"), "w", encoding="utf8")
                       for i in range(ref_num)]
            try:
                for key, refs in refer.items():
                    for i, w in enumerate(writers):
                        w.write(pp(refs[i] if i < len(refs) else refs[0]) + "\n")
                    pred_writer.write(pp(samples[key]) + "\n")
            finally:
                for w in writers:
                    w.close()


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", type=str, default=None,
                   help="folder with encoder.json and vocab.bpe (GPT-2's BPE)")
    p.add_argument("--tokenizer", type=str, default=None,
                   help="hf:<hub id | folder | file.gguf>: a Hugging Face model's tokenizer "
                        "instead of --vocab")
    p.add_argument("--sample_file", type=str, required=True, help="beam-search output jsonl")
    p.add_argument("--input_file", type=str, required=True, help="the *_formatted.jsonl the samples index")
    p.add_argument("--output_ref_file", type=str, required=True,
                   help="e2e: reference file; webnlg/dart: folder for reference0..N-1")
    p.add_argument("--output_pred_file", type=str, required=True, help="prediction file")
    p.add_argument("--ref_unique_file", type=str, default=None,
                   help="one integer per input line: group references by these ids instead of by context")
    p.add_argument("--ref_type", default="e2e", choices=list(TASKS), help="reference layout (the task's)")
    p.add_argument("--ref_num", default=4, type=int, help="number of reference files (webnlg/dart)")
    p.add_argument("--tokenize", action="store_true", help="split off non-word characters")
    p.add_argument("--lower", action="store_true", help="lowercase")
    p.add_argument("--filter", default="all", choices=["all", "seen", "unseen"],
                   help="webnlg only: keep categories seen during training, unseen ones, or all")
    setup_parser(p)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.ref_num < 1:
        usage_error("gpt2_decode.py", "--ref_num must be at least 1")
    if (args.vocab is None) == (args.tokenizer is None):
        usage_error("gpt2_decode.py", "give --vocab DIR (GPT-2's BPE files) or --tokenizer "
                                      "hf:... (a Hugging Face tokenizer), one of them")
    try:
        if args.tokenizer is not None:
            from nlg.hf_tokenizer import HFTextCodec
            enc = HFTextCodec.from_spec(args.tokenizer)
        else:
            enc = encoder.get_encoder(args.vocab)
        ref_unique = None
        if args.ref_unique_file is not None:
            ref_unique = read_ref_unique(args.ref_unique_file)
            print("len refer dict", len(ref_unique), "unique", len(set(ref_unique)))
        keys, refer = read_references(args.input_file, args.filter, ref_unique)
        print("unique refer dict", len(refer))
        if not refer:
            # As the reference: empty outputs (e.g. --filter unseen on a split with seen categories only).
            print(f"warning: {args.input_file}: no lines left after --filter {args.filter}; "
                  "writing empty outputs", file=sys.stderr)
        samples = read_samples(args.sample_file, keys, refer, enc, args.input_file)
        write_outputs(refer, samples, args.ref_type, args.ref_num, args.output_ref_file,
                      args.output_pred_file, args.tokenize, args.lower)
    except (ValueError, KeyError, OSError, ImportError) as e:
        usage_error("gpt2_decode.py", message(e))


if __name__ == "__main__":
    run("gpt2_decode.py", main)
