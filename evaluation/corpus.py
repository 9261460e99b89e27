"""Loading a labelled corpus: ``manifest.json`` plus one ``timestamp,value,is_anomaly`` CSV per series.

Series are read with the product's own reader (:func:`convergence.models.series.read_series`),
so duplicate and out-of-order rows are merged and sorted exactly as ``convergence detect``
does, and the labels follow the rows they belong to.

Examples
--------
>>> import json, tempfile
>>> d = Path(tempfile.mkdtemp())
>>> _ = (d / "a.csv").write_text("timestamp,value,is_anomaly\\n1,5,0\\n2,9,1\\n2,9,1\\n")
>>> _ = (d / "manifest.json").write_text(json.dumps({"series": [
...     {"name": "a", "file": "a.csv", "kind": "mean", "split": "tune"}]}))
>>> [(s.name, s.kind, len(s.series), s.series.labels.tolist()) for s in load_corpus(d, "all")]
[('a', 'mean', 2, [0, 1])]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convergence.models.series import Series, SeriesError, read_series

__all__ = ["SPLITS", "CorpusError", "LabelledSeries", "load_corpus"]

SPLITS = ("tune", "held-out", "all")
LABEL_COLUMN = "is_anomaly"


class CorpusError(ValueError):
    """The corpus cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class LabelledSeries:
    """One series of the corpus, read and tidied, with its labels and manifest facts."""

    name: str
    kind: str
    split: str
    series: Series

    @property
    def labels(self) -> Any:
        """0/1 labels per row of :attr:`series`."""
        return self.series.labels


def load_corpus(folder: Path, split: str = "held-out") -> list[LabelledSeries]:
    """The series of ``split`` (``tune``, ``held-out`` or ``all``) listed in ``folder/manifest.json``."""
    folder = Path(folder)
    if split not in SPLITS:
        raise CorpusError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    manifest = folder / "manifest.json"
    if not folder.is_dir():
        raise CorpusError(f"corpus folder {folder} does not exist; regenerate it with "
                          "`python3 evaluation/corpus/regenerate.py --out DIR` or pass the right --corpus")
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        entries = doc["series"]
        if not isinstance(entries, list):
            raise TypeError("'series' is not a list")
    except OSError as exc:
        raise CorpusError(f"cannot read {manifest}: {exc.strerror or exc}; a corpus folder needs "
                          "the manifest.json that regenerate.py writes") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"{manifest} is not a corpus manifest ({exc}); expected "
                          '{"series": [{"name", "file", "kind", "split"}, ...]}') from None
    out: list[LabelledSeries] = []
    for i, e in enumerate(entries):
        try:
            name, file, kind, where = (str(e["name"]), str(e["file"]), str(e["kind"]), str(e["split"]))
        except (KeyError, TypeError):
            raise CorpusError(f"{manifest}: series #{i + 1} lacks one of name, file, kind, split") from None
        if where not in SPLITS[:2]:
            raise CorpusError(f"{manifest}: series {name!r} has split {where!r}; use 'tune' or 'held-out'")
        if split != "all" and where != split:
            continue
        path = folder / file
        if path.resolve().parent != folder.resolve():
            raise CorpusError(f"{manifest}: series {name!r} names file {file!r} outside the corpus folder")
        try:
            series = read_series(path, label_column=LABEL_COLUMN)
        except SeriesError as exc:
            raise CorpusError(str(exc)) from None
        out.append(LabelledSeries(name, kind, where, series))
    if not out:
        raise CorpusError(f"{manifest} lists no series in split {split!r}")
    return out
