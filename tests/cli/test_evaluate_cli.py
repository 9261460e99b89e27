"""``convergence evaluate detect``: the table, its JSON, and its errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convergence.cli.main import app

runner = CliRunner()
REPO_CORPUS = Path(__file__).resolve().parents[2] / "evaluation" / "corpus" / "data"
PICK = ["mean-sine-0", "extremum-sine-0", "mean-walk-1", "real-nile"]  # 2 tune, 2 held out


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four series of the committed corpus (two tune, two held out), cut short."""
    d = tmp_path_factory.mktemp("corpus")
    doc = json.loads((REPO_CORPUS / "manifest.json").read_text())
    keep = [s for s in doc["series"] if s["name"] in PICK]
    for s in keep:
        lines = (REPO_CORPUS / s["file"]).read_text().splitlines()
        (d / s["file"]).write_text("\n".join(lines[:1400]) + "\n")
    (d / "manifest.json").write_text(json.dumps({"series": keep}))
    return d


def test_table_on_the_held_out_split(small_corpus: Path) -> None:
    r = runner.invoke(app, ["evaluate", "detect", "--corpus", str(small_corpus)])
    assert r.exit_code == 0, r.output
    assert "split held-out: 2 series" in r.stdout
    for m in ("ours", "zscore", "river-hst", "river-pad"):
        assert f"VUS-PR {m}" in r.stdout and f"event {m}" in r.stdout
    assert "| **overall** | 2 |" in r.stdout and "alarm thresholds:" in r.stdout
    assert "scoring 2 tune series to choose alarm thresholds" in r.stderr


def test_json_is_one_document_with_every_figure(small_corpus: Path) -> None:
    r = runner.invoke(app, ["evaluate", "detect", "--corpus", str(small_corpus), "--split", "all",
                            "--methods", "ours,zscore", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["split"] == "all" and d["methods"] == ["ours", "zscore"]
    overall = d["rows"][-1]
    assert overall["kind"] == "overall" and overall["series"] == 4
    assert {"vus_pr", "event_score", "windows", "detected", "false_positives",
            "median_delay_rows"} <= set(overall["methods"]["ours"])


def test_errors_are_one_line(tmp_path: Path, small_corpus: Path) -> None:
    r = runner.invoke(app, ["evaluate", "detect", "--corpus", str(tmp_path / "none")])
    assert r.exit_code == 1 and r.stderr.startswith("error: corpus folder") and "Traceback" not in r.output
    r = runner.invoke(app, ["evaluate", "detect", "--corpus", str(small_corpus), "--methods", "ours,magic"])
    assert r.exit_code == 1 and "unknown magic" in r.stderr
    broken = tmp_path / "broken"
    shutil.copytree(small_corpus, broken)
    (broken / "mean-sine-0.csv").write_text("timestamp,value,is_anomaly\n1,x,0\n")
    r = runner.invoke(app, ["evaluate", "detect", "--corpus", str(broken), "--split", "all"])
    assert r.exit_code == 1 and "line 2: value 'x' is not a number" in r.stderr
