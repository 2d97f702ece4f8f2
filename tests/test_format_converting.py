"""format_converting_{e2e,webnlg,dart}.py: outputs as Microsoft's LoRA converters write them."""
import json
import subprocess
import sys

import pytest


def run_script(repo_root, name, *args):
    return subprocess.run([sys.executable, f"src/{name}", *map(str, args)], cwd=repo_root / "NLG",
                          capture_output=True, text=True)


def read_jsonl_lines(path):
    return path.read_text(encoding="utf8").splitlines()


# ------------------------------------ E2E ------------------------------------

def test_e2e_valid_split(repo_root, shared_data, tmp_path):
    out = tmp_path / "valid_formatted.jsonl"
    r = run_script(repo_root, "format_converting_e2e.py", shared_data / "e2e" / "valid.txt", out)
    assert r.returncode == 0, r.stderr
    raw = (shared_data / "e2e" / "valid.txt").read_text(encoding="utf8").splitlines()
    lines = read_jsonl_lines(out)
    assert len(lines) == len(raw) == 4672
    for src, line in zip(raw, lines):
        x = json.loads(line)
        assert list(x) == ["context", "completion"]
        assert line == json.dumps(x)  # json.dumps defaults: ascii escapes, ", " and ": "
        assert x["context"] + "||" + x["completion"] == src.strip()
    assert len({json.loads(ln)["context"] for ln in lines}) == 547


def test_e2e_exact_output(tmp_path):
    from nlg import format_converting_e2e as conv
    src = tmp_path / "in.txt"
    src.write_text("name : Café | food : Thai|| Café serves Thai food . \n"
                   "name : X||X is \"ok\" .\n", encoding="utf8")
    conv.convert(str(src), str(tmp_path / "out.jsonl"))
    assert read_jsonl_lines(tmp_path / "out.jsonl") == [
        '{"context": "name : Caf\\u00e9 | food : Thai", "completion": " Caf\\u00e9 serves Thai food ."}',
        '{"context": "name : X", "completion": "X is \\"ok\\" ."}',
    ]


@pytest.mark.parametrize("bad", ["no separator here\n", "\n", "a||b||c\n"])
def test_e2e_malformed_line_names_file_and_line(repo_root, tmp_path, bad):
    src = tmp_path / "bad.txt"
    src.write_text("name : A||A .\n" + bad + "name : B||B .\n", encoding="utf8")
    out = tmp_path / "out.jsonl"
    r = run_script(repo_root, "format_converting_e2e.py", src, out)
    assert r.returncode != 0
    assert f"{src}:2:" in r.stderr
    assert not out.exists()


# ----------------------------------- WebNLG -----------------------------------

def _webnlg_entry(n, category, triples, lexs):
    return {str(n): {
        "category": category,
        "lexicalisations": [{"comment": c, "lang": "", "lex": t, "xml_id": f"Id{i}"} for i, (c, t) in enumerate(lexs)],
        "modifiedtripleset": [{"subject": s, "property": p, "object": o} for s, p, o in triples],
    }}


def test_webnlg_exact_output_and_seen_flag(tmp_path, capsys):
    from nlg import format_converting_webnlg as conv
    data = {"entries": [
        _webnlg_entry(1, "Airport", [("Aarhus", "leaderName", "Jacob_Bundsgaard")],
                      [("good", "The leader of Aarhus is Jacob Bundsgaard."), ("bad", "dropped")]),
        _webnlg_entry(2, "Athlete", [("A_B", "club", "C_D"), ("A_B", "birthPlace", "\"Érd\"")],
                      [("good", "A B plays for C D."), ("good", "Born in Érd, A B plays for C D.")]),
    ]}
    src = tmp_path / "in.json"
    src.write_text(json.dumps(data), encoding="utf8")
    conv.convert(str(src), str(tmp_path / "out.jsonl"))
    assert read_jsonl_lines(tmp_path / "out.jsonl") == [
        '{"context": "Aarhus : leaderName : Jacob_Bundsgaard", "completion": "The leader of Aarhus is Jacob Bundsgaard.", "cate": true}',  # noqa: E501 (exact data)
        '{"context": "A_B : club : C_D | A_B : birthPlace : \\"\\u00c9rd\\"", "completion": "A B plays for C D.", "cate": false}',  # noqa: E501 (exact data)
        '{"context": "A_B : club : C_D | A_B : birthPlace : \\"\\u00c9rd\\"", "completion": "Born in \\u00c9rd, A B plays for C D.", "cate": false}',  # noqa: E501 (exact data)
    ]
    assert capsys.readouterr().out.splitlines() == ["cate Airport 1", "cate Athlete 1"]


def test_webnlg_dev_split(repo_root, shared_data, tmp_path):
    src = shared_data / "webnlg_challenge_2017" / "dev.json"
    out = tmp_path / "valid_formatted.jsonl"
    r = run_script(repo_root, "format_converting_webnlg.py", src, out)
    assert r.returncode == 0, r.stderr
    entries = [w[str(i + 1)] for i, w in enumerate(json.loads(src.read_text(encoding="utf8"))["entries"])]
    assert len(entries) == 872
    good = [(e, lex["lex"]) for e in entries for lex in e["lexicalisations"] if lex["comment"] == "good"]
    recs = [json.loads(ln) for ln in read_jsonl_lines(out)]
    assert len(recs) == len(good)
    for (e, text), x in zip(good, recs):
        assert x["completion"] == text
        assert x["context"].count(" | ") == len(e["modifiedtripleset"]) - 1
        assert x["cate"] == (e["category"] in ("Airport", "Astronaut", "Building", "City", "ComicsCharacter",
                                               "Food", "Monument", "SportsTeam", "University", "WrittenWork"))
    printed = dict((ln.split()[1], int(ln.split()[2])) for ln in r.stdout.splitlines() if ln.startswith("cate "))
    assert sum(printed.values()) == 872


@pytest.mark.parametrize("breakage,where", [
    (lambda d: d["entries"][1].update({"7": d["entries"][1].pop("2")}), "entries[1]"),
    (lambda d: d["entries"][0]["1"].pop("category"), "entries[0]"),
    (lambda d: d["entries"][1]["2"]["modifiedtripleset"][0].pop("object"), "entries[1]"),
])
def test_webnlg_malformed_entry_names_file_and_index(repo_root, tmp_path, breakage, where):
    data = {"entries": [_webnlg_entry(1, "City", [("a", "b", "c")], [("good", "x")]),
                        _webnlg_entry(2, "City", [("d", "e", "f")], [("good", "y")])]}
    breakage(data)
    src = tmp_path / "bad.json"
    src.write_text(json.dumps(data), encoding="utf8")
    r = run_script(repo_root, "format_converting_webnlg.py", src, tmp_path / "out.jsonl")
    assert r.returncode != 0
    assert f"{src}: {where}" in r.stderr


# ------------------------------------ DART ------------------------------------

def test_dart_exact_output(tmp_path, capsys):
    from nlg import format_converting_dart as conv
    data = [
        {"tripleset": [["Mars Hill College", "JOINED", "1973"], ["Mars Hill College", "LOCATION", "Mars Hill, NC"]],
         "subtree_was_extended": True,
         "annotations": [{"source": "s", "text": "A school from Mars Hill, NC, joined in 1973."},
                         {"source": "s", "text": "Mars Hill College joined in 1973."}]},
        {"tripleset": [["Newberry College", "[TITLE]", "Wolves"]],
         "annotations": [{"source": "s", "text": "Newberry's nickname is the wolves."}]},
    ]
    src = tmp_path / "in.json"
    src.write_text(json.dumps(data), encoding="utf8")
    conv.convert(str(src), str(tmp_path / "out.jsonl"))
    ctx = "Mars Hill College : joined : 1973 | Mars Hill College : location : Mars Hill, NC"
    assert [json.loads(ln) for ln in read_jsonl_lines(tmp_path / "out.jsonl")] == [
        {"context": ctx, "completion": "A school from Mars Hill, NC, joined in 1973."},
        {"context": ctx, "completion": "Mars Hill College joined in 1973."},
        {"context": "Newberry College : [title] : Wolves", "completion": "Newberry's nickname is the wolves."},
    ]
    assert capsys.readouterr().out == "unique source is 2\n"


def test_dart_dev_split(repo_root, shared_data, tmp_path):
    src = shared_data / "dart" / "dart-v1.1.1-full-dev.json"
    out = tmp_path / "valid_formatted.jsonl"
    r = run_script(repo_root, "format_converting_dart.py", src, out)
    assert r.returncode == 0, r.stderr
    data = json.loads(src.read_text(encoding="utf8"))
    assert r.stdout.strip() == f"unique source is {len(data)}" == "unique source is 2768"
    recs = [json.loads(ln) for ln in read_jsonl_lines(out)]
    assert [x["completion"] for x in recs] == [a["text"] for e in data for a in e["annotations"]]
    assert all(list(x) == ["context", "completion"] for x in recs)


@pytest.mark.parametrize("entry,msg", [
    ({"tripleset": [["a", "b"]], "annotations": []}, "tripleset[0] must be"),
    ({"tripleset": [["a", "b", "c"]]}, "missing field 'annotations'"),
    ({"tripleset": [["a", "b", "c"]], "annotations": [{"source": "x"}]}, "annotations[0] lacks 'text'"),
])
def test_dart_malformed_entry_names_file_and_index(repo_root, tmp_path, entry, msg):
    src = tmp_path / "bad.json"
    src.write_text(json.dumps([{"tripleset": [["x", "y", "z"]], "annotations": [{"text": "t"}]}, entry]),
                   encoding="utf8")
    r = run_script(repo_root, "format_converting_dart.py", src, tmp_path / "out.jsonl")
    assert r.returncode != 0
    assert f"{src}: entry [1]" in r.stderr and msg in r.stderr
