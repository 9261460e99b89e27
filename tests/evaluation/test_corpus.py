"""The corpus loader, and the committed corpus itself (what regenerate.py wrote)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from convergence.evaluation.corpus import CorpusError, load_corpus

REPO_CORPUS = Path(__file__).resolve().parents[2] / "evaluation" / "corpus" / "data"
KINDS = {"amplitude", "extremum", "frequency", "mean", "pattern", "pattern-shift", "platform",
         "trend", "variance", "mode-correlation"}


def _corpus(tmp_path: Path, series: list[dict[str, str]], files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "manifest.json").write_text(json.dumps({"series": series}))
    return tmp_path


def test_committed_corpus_covers_every_kind_in_both_splits_and_stays_small() -> None:
    doc = json.loads((REPO_CORPUS / "manifest.json").read_text())
    by = Counter((s["kind"], s["split"]) for s in doc["series"])
    for kind in KINDS:
        assert by[(kind, "tune")] == 3 and by[(kind, "held-out")] == 3, kind
    assert {s["kind"] for s in doc["series"] if s["base"] == "real"} == {
        "real-nile", "real-elnino", "real-unemployment"}
    assert sum(p.stat().st_size for p in REPO_CORPUS.glob("*.csv")) < 5_000_000


def test_committed_corpus_is_realistic_and_labels_survive_tidying() -> None:
    held = load_corpus(REPO_CORPUS, "held-out")
    assert len(held) == 32 and all(s.split == "held-out" for s in held)
    notes = [n for s in held for n in s.series.notes]
    assert any("out of order" in n for n in notes) and any("sharing a timestamp" in n for n in notes)
    for s in held:
        assert s.labels is not None and s.labels.shape == s.series.values.shape
        assert 0 < s.labels.sum() < len(s.series) and np.all(np.diff(s.series.timestamps) > 0)
    nile = next(s for s in held if s.name == "real-nile")
    years = 1970 + nile.series.timestamps[nile.labels == 1] / (365.2425 * 86400)
    assert np.round(years).astype(int).tolist() == [1898, 1899, 1900, 1901, 1902, 1903]


def test_splits_and_all(tmp_path: Path) -> None:
    text = "timestamp,value,is_anomaly\n1,1,0\n2,5,1\n"
    d = _corpus(tmp_path, [{"name": "a", "file": "a.csv", "kind": "mean", "split": "tune"},
                           {"name": "b", "file": "b.csv", "kind": "mean", "split": "held-out"}],
                {"a.csv": text, "b.csv": text})
    assert [s.name for s in load_corpus(d, "tune")] == ["a"]
    assert [s.name for s in load_corpus(d, "held-out")] == ["b"]
    assert [s.name for s in load_corpus(d, "all")] == ["a", "b"]


@pytest.mark.parametrize(("series", "files", "message"), [
    (None, {}, "does not exist"),
    ([], {}, "lists no series"),
    ([{"name": "a", "file": "a.csv", "kind": "mean"}], {}, "lacks one of name, file, kind, split"),
    ([{"name": "a", "file": "a.csv", "kind": "mean", "split": "later"}], {}, "use 'tune' or 'held-out'"),
    ([{"name": "a", "file": "../x.csv", "kind": "mean", "split": "tune"}], {}, "outside the corpus folder"),
    ([{"name": "a", "file": "a.csv", "kind": "mean", "split": "tune"}],
     {"a.csv": "timestamp,value\n1,2\n"}, "no label column 'is_anomaly'"),
    ([{"name": "a", "file": "a.csv", "kind": "mean", "split": "tune"}],
     {"a.csv": "timestamp,value,is_anomaly\n1,2,maybe\n"}, "must be 0 or 1"),
])
def test_bad_corpus_is_one_clear_error(tmp_path: Path, series: list[dict[str, str]] | None,
                                       files: dict[str, str], message: str) -> None:
    folder = tmp_path / "c"
    if series is not None:
        folder.mkdir()
        _corpus(folder, series, files)
    with pytest.raises(CorpusError, match=message):
        load_corpus(folder, "tune")


def test_not_a_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(CorpusError, match="not a corpus manifest"):
        load_corpus(tmp_path, "all")
    with pytest.raises(CorpusError, match="split 'x' is not one of"):
        load_corpus(tmp_path, "x")
