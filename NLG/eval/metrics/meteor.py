"""METEOR 1.5 through the official jar (Java), with the options each official scorer uses.

- e2e-metrics (COCO caption code): `-stdio -l en -norm` on PTB-tokenized, lower-cased text
  without punctuation; segment statistics are pooled by the jar's EVAL command.
- GenerationEval: `-l en -norm -r N` on files of NLTK-tokenized text, N references per line.

The jar and its English paraphrase table come from the `pycocoevalcap` package (or from
$METEOR_JAR). Without Java or the jar, MeteorUnavailable says why and the caller reports
METEOR as unavailable.
"""
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path


class MeteorUnavailable(RuntimeError):
    pass


def find_meteor_jar():
    """Path of meteor-1.5.jar whose data/paraphrase-en.gz sits beside it."""
    candidates = []
    if os.environ.get("METEOR_JAR"):
        candidates.append(Path(os.environ["METEOR_JAR"]))
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.append(Path(loc) / "meteor" / "meteor-1.5.jar")
    for jar in candidates:
        if jar.is_file() and (jar.parent / "data" / "paraphrase-en.gz").is_file():
            return jar
    if not candidates:
        raise MeteorUnavailable("no METEOR jar: install the pycocoevalcap package (it ships "
                                "meteor-1.5.jar and its paraphrase table) or set METEOR_JAR")
    raise MeteorUnavailable("no meteor-1.5.jar with data/paraphrase-en.gz beside it among: "
                            + ", ".join(map(str, candidates)))


def find_java():
    java = shutil.which("java")
    if java is None:
        raise MeteorUnavailable("java not found on PATH (METEOR 1.5 is a Java program)")
    return java


def _command(*args):
    return [find_java(), "-Xmx2G", "-jar", str(find_meteor_jar()), *args]


def meteor_coco(refs_per_seg, hyps):
    """e2e-metrics' METEOR: inputs are the COCO-tokenized strings."""
    cmd = _command("-", "-", "-stdio", "-l", "en", "-norm")
    proc = subprocess.Popen(cmd, cwd=Path(cmd[3]).parent, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stats = []
        for refs, hyp in zip(refs_per_seg, hyps):
            # the COCO wrapper strips the field separator from the hypothesis only
            hyp = hyp.replace("|||", "").replace("  ", " ")
            proc.stdin.write(("SCORE ||| " + " ||| ".join(refs) + " ||| " + hyp + "\n").encode())
            proc.stdin.flush()
            line = proc.stdout.readline().decode().strip()
            if not line:
                raise MeteorUnavailable("METEOR jar stopped: " + proc.stderr.read().decode()[-500:])
            stats.append(line)
        proc.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode())
        proc.stdin.flush()
        for _ in stats:
            proc.stdout.readline()
        return float(proc.stdout.readline().strip())
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()


def meteor_files(refs_per_seg, hyps, num_refs):
    """GenerationEval's METEOR: inputs are NLTK-tokenized strings, num_refs per segment."""
    cmd_base = _command()
    with tempfile.TemporaryDirectory(prefix="meteor-") as tmp:
        hyp_file = Path(tmp) / "hypothesis"
        ref_file = Path(tmp) / "references"
        hyp_file.write_text("\n".join(hyps), encoding="utf-8")
        ref_file.write_text("\n".join(r for refs in refs_per_seg for r in refs[:num_refs]),
                            encoding="utf-8")
        cmd = cmd_base + [str(hyp_file), str(ref_file), "-l", "en", "-norm", "-r", str(num_refs)]
        res = subprocess.run(cmd, capture_output=True, cwd=Path(cmd[3]).parent)
    out = res.stdout.decode("utf-8", "replace")
    m = re.search(r"Final score:\s*([0-9.eE+-]+)", out)
    if res.returncode != 0 or m is None:
        raise MeteorUnavailable("METEOR jar failed (exit %d): %s" % (
            res.returncode, (res.stderr.decode("utf-8", "replace") or out)[-500:]))
    return float(m.group(1))
