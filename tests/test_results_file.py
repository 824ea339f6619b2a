"""benchmarks/results_file.py: each benchmark's NAME.json and NAME.md, with the facts that place the numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import results_file  # noqa: E402


def test_write_results_puts_the_facts_in_both_files(tmp_path):
    rows = [["eager", "1,234"], ["C kernel", "5,678"]]
    json_path, md_path = results_file.write_results(
        "speed", {"images_per_second": {"eager": 1234.0}}, results_file.markdown_table(["runtime", "img/s"], rows),
        results_dir=tmp_path / "new", title="Inference speed", packages=["pytest", "no-such-package-xyz"],
    )  # fmt: skip
    assert (json_path, md_path) == (tmp_path / "new" / "speed.json", tmp_path / "new" / "speed.md")

    saved = json.loads(json_path.read_text())
    assert saved["images_per_second"] == {"eager": 1234.0}
    facts = saved["facts"]
    assert facts["date_utc"].endswith("Z") and facts["date_utc"][:4].isdigit()
    assert facts["command"].startswith("python ")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert facts["git"]["commit"] == head and isinstance(facts["git"]["dirty"], bool)
    assert facts["cpu"]["model"] and facts["cpu"]["cores"] >= 1
    assert set(facts["cpu"]["isa_flags"]) <= set(results_file.ISA_FLAGS)
    if Path("/proc/cpuinfo").exists() and " avx2" in Path("/proc/cpuinfo").read_text():
        assert "avx2" in facts["cpu"]["isa_flags"]
    versions = facts["versions"]
    assert versions["python"] == f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    assert versions["torch"] and versions["numpy"] and versions["pytest"] == pytest.__version__
    assert versions["no-such-package-xyz"] is None

    markdown = md_path.read_text()
    assert markdown.startswith("# Inference speed\n")
    for fact in (facts["date_utc"], head[:10], facts["cpu"]["model"], f"torch {versions['torch']}", "no-such-package-xyz not installed"):
        assert fact in markdown
    assert "| runtime | img/s |" in markdown and "| C kernel | 5,678 |" in markdown


def test_a_new_run_replaces_the_files_and_rows_are_kept_as_a_list(tmp_path):
    results_file.write_results("loc", {"lines": 1}, "first", results_dir=tmp_path)
    json_path, md_path = results_file.write_results("loc", [{"lines": 2}], "second", results_dir=tmp_path)
    assert json.loads(json_path.read_text())["rows"] == [{"lines": 2}]
    assert "second" in md_path.read_text() and "first" not in md_path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loc.json", "loc.md"]


@pytest.mark.parametrize(
    ("name", "results", "message"),
    [("../escape", {}, "use letters"), ("ok", {"facts": 1}, "written by write_results"), ("ok", "text", "dict or a list")],
)
def test_bad_input_is_refused_with_the_fix(tmp_path, name, results, message):
    with pytest.raises((ValueError, TypeError), match=message):
        results_file.write_results(name, results, "", results_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_the_shell_entry_wraps_printed_text(tmp_path):
    body = tmp_path / "printed.txt"
    body.write_text("fast seed 1: test acc 0.9912\n")
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "results_file.py"), "core_runs", "--body-file", str(body),
         "--results-dir", str(tmp_path / "out"), "--command", "bash benchmarks/reproduce_core.sh"],
        check=True, capture_output=True,
    )  # fmt: skip
    saved = json.loads((tmp_path / "out" / "core_runs.json").read_text())
    assert saved["text"] == body.read_text() and saved["facts"]["command"] == "bash benchmarks/reproduce_core.sh"
    assert "```text\nfast seed 1: test acc 0.9912\n```" in (tmp_path / "out" / "core_runs.md").read_text()
    missing = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "results_file.py"), "x", "--body-file", str(tmp_path / "none.txt")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 2 and "--body-file" in missing.stderr and "No such file" in missing.stderr
