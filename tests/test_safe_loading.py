"""Nothing rm_lab reads may run code: a checkpoint crafted to run a command is refused before anything runs,
on `train-rm --resume` and on the keep_best restore; and the package holds no code-running loader."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rm_lab import io
from rm_lab.cli import app
from rm_lab.reward import store

PACKAGE = Path(__file__).resolve().parent.parent / "rm_lab"
runner = CliRunner()


class Payload:
    """Unpickling this runs `touch <marker>` (what a crafted checkpoint in a shared run folder would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _crafted(path: Path, marker: Path, zip_format: bool = True) -> Path:
    obj = {"epoch": 0, "global_step": 1, "state_dict": Payload(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    return path


def test_the_payload_is_real(tmp_path):
    """The test's payload does run under a code-running load: the refusals below are not vacuous."""
    marker = tmp_path / "ran"
    path = _crafted(tmp_path / "evil.ckpt", marker)
    torch.load(path, weights_only=False)  # what rm_lab must never do
    assert marker.exists()


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_crafted_checkpoint_is_refused_without_running(tmp_path, zip_format):
    marker = tmp_path / "ran"
    path = _crafted(tmp_path / "checkpoints" / "m0" / "last.ckpt", marker, zip_format)
    with pytest.raises(store.RunFolderError, match=r"refused to load a checkpoint .* never runs code") as e:
        store.load_checkpoint(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def _killed_run(sim_dir: Path, backbone: Path, cache: Path, runs_dir: Path) -> Path:
    """A train-rm run that stopped after its first epoch: checkpoints, no final weights."""
    res = runner.invoke(app, ["train-rm", f"data={sim_dir}", f"backbone={backbone}", f"cache_dir={cache}",
                              "epochs=1", "hidden=16", "batch_size=16", "max_length=64", "pairwise=false",
                              "heads=[preference,continue]"])
    assert res.exit_code == 0, (res.output, res.exception)
    (run,) = (runs_dir / "train-rm").iterdir()
    (run / "checkpoints/m0/final.safetensors").unlink()
    (run / "model.safetensors").unlink()
    return run


@pytest.fixture
def sim_dir(tmp_path):
    from rm_helpers import tiny_world

    d = tmp_path / "records"
    for kind, df in tiny_world(seed=4, n=16).frames.items():
        io.write_records(df, d / f"{kind}.parquet", kind)
    return d


def test_resume_refuses_a_crafted_last_ckpt(sim_dir, backbone, tmp_path, runs_dir):
    run = _killed_run(sim_dir, backbone, tmp_path / "cache", runs_dir)
    marker = tmp_path / "ran"
    _crafted(run / "checkpoints/m0/last.ckpt", marker)
    res = runner.invoke(app, ["train-rm", "--resume", str(run), "epochs=2"])
    assert isinstance(res.exception, store.RunFolderError), (res.output, res.exception)
    msg = str(res.exception)
    assert "last.ckpt" in msg and "refused" in msg and "--resume" in msg
    assert not marker.exists()
    assert not (run / "rm_config.json").exists()  # nothing looks finished


def test_resume_refuses_a_truncated_last_ckpt(sim_dir, backbone, tmp_path, runs_dir):
    run = _killed_run(sim_dir, backbone, tmp_path / "cache", runs_dir)
    last = run / "checkpoints/m0/last.ckpt"
    last.write_bytes(last.read_bytes()[:200])
    res = runner.invoke(app, ["train-rm", "--resume", str(run), "epochs=2"])
    assert isinstance(res.exception, store.RunFolderError), (res.output, res.exception)
    msg = str(res.exception)
    assert str(last) in msg and "truncated" in msg and f"rm_lab train-rm --resume {run}" in msg


def test_keep_best_refuses_a_crafted_epoch_checkpoint(tmp_path):
    """The restore of the best epoch reads epochNNN.ckpt: safely, like every checkpoint."""
    from rm_lab.reward.train import _restore_best

    member = store.MemberFiles(tmp_path / "checkpoints" / "m0")
    store.write_history(member, [{"epoch": 0, "val/loss": 0.5}, {"epoch": 1, "val/loss": 0.7}])
    marker = tmp_path / "ran"
    _crafted(member.epoch(0), marker)
    with pytest.raises(store.RunFolderError, match="refused"):
        _restore_best(torch.nn.Linear(2, 1), member, "val/loss")
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# the package holds no loader that can run code

def _code_lines(path: Path) -> tuple[str, dict[int, str]]:
    """(source, {line number: code}) with comments and docstrings blanked out."""
    import ast
    import io as _io
    import tokenize

    src = path.read_text(encoding="utf-8")
    docstrings: set[tuple[int, int]] = set()
    for node in ast.walk(ast.parse(src)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            docstrings.add((body[0].lineno, body[0].col_offset))
    lines = src.splitlines()
    for tok in tokenize.generate_tokens(_io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING and tok.start in docstrings):
            (r0, c0), (r1, c1) = tok.start, tok.end
            for r in range(r0, r1 + 1):
                a = c0 if r == r0 else 0
                b = c1 if r == r1 else len(lines[r - 1])
                lines[r - 1] = lines[r - 1][:a] + " " * (b - a) + lines[r - 1][b:]
    return src, {i + 1: ln for i, ln in enumerate(lines) if ln.strip()}


FORBIDDEN = [
    (r"\bimport\s+(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b|\bfrom\s+(c?pickle|dill|cloudpickle|joblib|"
     r"shelve|marshal)\s+import\b", "a pickle-family module"),
    (r"\b(c?pickle|dill|cloudpickle|shelve|marshal)\s*\.\s*(load|loads|Unpickler|open)\b", "unpickling"),
    (r"\bjoblib\s*\.\s*load\b", "joblib.load"),
    (r"\byaml\s*\.\s*(load|unsafe_load|load_all|full_load|unsafe_load_all)\s*\(", "yaml.load (use safe_load)"),
    (r"\b(UnsafeLoader|FullLoader|yaml\s*\.\s*Loader)\b", "an unsafe YAML loader"),
    (r"(?<![\w.])(eval|exec)\s*\(", "eval/exec"),
    (r"\bread_pickle\s*\(", "pandas.read_pickle"),
    (r"\btrust_remote_code\s*=\s*True\b", "trust_remote_code=True"),
]


def _calls(src: str, name_re: str) -> list[tuple[int, str]]:
    """Each call matching `name_re(` with its full argument text (balanced parentheses)."""
    out = []
    for m in re.finditer(name_re + r"\s*\(", src):
        depth, i = 0, m.end() - 1
        while i < len(src):
            depth += {"(": 1, ")": -1}.get(src[i], 0)
            if depth == 0:
                break
            i += 1
        out.append((src.count("\n", 0, m.start()) + 1, src[m.start():i + 1]))
    return out


def test_the_package_has_no_code_running_loader():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    found = []
    for path in files:
        src, code = _code_lines(path)
        rel = path.relative_to(PACKAGE.parent)
        for lineno, line in code.items():
            for pattern, what in FORBIDDEN:
                if re.search(pattern, line):
                    found.append(f"{rel}:{lineno}: {what}: {line.strip()}")
        for lineno, call in _calls(src, r"\btorch\s*\.\s*load"):
            if lineno in code and not re.search(r"weights_only\s*=\s*True", call):
                found.append(f"{rel}:{lineno}: torch.load without weights_only=True")
        for lineno, call in _calls(src, r"\b(np|numpy)\s*\.\s*load"):
            if lineno in code and re.search(r"allow_pickle\s*=\s*True", call):
                found.append(f"{rel}:{lineno}: np.load(allow_pickle=True)")
        for lineno, call in _calls(src, r"\b\w*(Model|ForCausalLM|ForSequenceClassification)\w*\s*\.\s*from_pretrained"):
            if lineno in code and not re.search(r"use_safetensors\s*=\s*True|gguf_file\s*=", call):
                found.append(f"{rel}:{lineno}: a model from_pretrained that may read a pickled .bin")
    assert not found, "\n".join(found)


def test_the_scan_finds_what_it_forbids(tmp_path, monkeypatch):
    """The scan itself works: each forbidden form in a file is reported."""
    bad = tmp_path / "rm_lab"
    bad.mkdir()
    (bad / "a.py").write_text('"""docstring: pickle.load is named here only."""\n'
                              "import pickle\nx = yaml.load(s)\ny = eval('1')\nz = torch.load(p)\n"
                              "w = np.load(p, allow_pickle=True)\nm = AutoModel.from_pretrained(d)\n"
                              "ok = torch.load(p, weights_only=True)\nq = model.eval()\n")
    for i in range(21):
        (bad / f"pad{i}.py").write_text("x = 1\n")
    monkeypatch.setitem(globals(), "PACKAGE", bad)
    with pytest.raises(AssertionError) as e:
        test_the_package_has_no_code_running_loader()
    msg = str(e.value)
    for what in ("a pickle-family module", "yaml.load", "eval/exec", "torch.load without", "allow_pickle",
                 "from_pretrained"):
        assert what in msg, what
    assert ":1:" not in msg and ":9:" not in msg and ":10:" not in msg  # the docstring, the safe load, .eval()
