"""``convergence models train regime``, ``models list`` and ``convergence regime``."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from convergence.cli import models
from convergence.cli.regime import regime
from convergence.models.regime import save_regime, train_regime
from convergence.models.registry import ModelRegistry
from convergence.models.series import read_series

# the two groups mounted the way cli/main.py mounts them
app = typer.Typer()
app.add_typer(models.app, name="models")
app.command("regime")(regime)
runner = CliRunner()
FAST = ["--states", "3", "--restarts", "2"]

#: a small campaign for training tests: two genuine scenarios and two decoys
FEW = "two-regions,topic-only,lone-surge,pure-noise"


def write_prices(path: Path, n: int = 600, seed: int = 4, iso: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    r = np.where(np.arange(n) % 300 < 200, rng.normal(0, 0.004, n), rng.normal(0, 0.03, n))
    prices = 100 * np.exp(np.cumsum(r))
    with path.open("w") as fh:
        fh.write("timestamp,value\n")
        for i, p in enumerate(prices):
            t = f"2024-03-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z" if iso else str(1_700_000_000 + 60 * i)
            fh.write(f"{t},{p:.6f}\n")
    return path


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no ./convergence.toml from the repo
    monkeypatch.delenv("CONVERGENCE_CONFIG", raising=False)
    monkeypatch.setenv("CONVERGENCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CONVERGENCE_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path


@pytest.fixture
def prices(tmp_path: Path) -> Path:
    return write_prices(tmp_path / "prices.csv")


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding regime@1 fitted to ``write_prices`` as FAST training would."""
    root = tmp_path_factory.mktemp("registry")
    values = read_series(write_prices(root / "prices.csv")).values
    save_regime(ModelRegistry(root / "models"), train_regime(values, n_states=3, n_init=2, seed=7))
    return root / "models"


@pytest.fixture
def trained(trained_once: Path, isolated: Path) -> Path:
    """This test's registry (CONVERGENCE_MODELS_DIR), pre-filled with regime@1."""
    shutil.copytree(trained_once, isolated / "models")
    return isolated / "models"


def invoke(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def read_labels(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open() as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_train_prints_states_and_saves(prices: Path, isolated: Path) -> None:
    code, out = invoke("models", "train", "regime", "--input", prices, *FAST, "--seed", "3")
    assert code == 0, out
    for name in ("calm", "normal", "stressed", "share of time", "typical duration"):
        assert name in out
    assert "saved regime@1" in out
    assert (isolated / "models" / "regime" / "v0001" / "model.npz").is_file()
    meta = json.loads((isolated / "models" / "regime" / "v0001" / "meta.json").read_text())
    assert meta["metadata"]["seed"] == 3 and meta["metadata"]["source"] == str(prices)


def test_train_json_and_list(prices: Path) -> None:
    code, out = invoke("models", "train", "regime", "--input", prices, *FAST, "--json")
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["model"] == "regime@1" and len(summary["states"]) == 3
    assert invoke("models", "train", "regime", "-i", prices, *FAST, "--name", "btc")[0] == 0
    code, out = invoke("models", "list")
    assert code == 0 and "regime@1" in out and "btc@1" in out
    code, out = invoke("models", "list", "--json")
    assert [m["name"] + str(m["version"]) for m in json.loads(out)] == ["btc1", "regime1"]


def test_list_empty_registry_says_how_to_train() -> None:
    code, out = invoke("models", "list")
    assert code == 0 and "convergence models train regime --input FILE.csv" in out


def test_regime_labels_causally(prices: Path, isolated: Path, trained: Path) -> None:
    code, out = invoke("regime", prices, "--out", isolated / "labels.csv")
    assert code == 0, out
    header, rows = read_labels(isolated / "labels.csv")
    assert header == ["timestamp", "value", "regime", "p_calm", "p_normal", "p_stressed",
                      "regime_z"]
    assert len(rows) == 600
    with prices.open() as fh:
        assert [r[0] for r in rows] == [line.split(",")[0] for line in list(fh)[1:]]
    probs = np.array([[float(p) for p in r[3:6]] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    names = ("calm", "normal", "stressed")
    assert [r[2] for r in rows] == [names[int(np.argmax(p))] for p in probs]
    assert {r[2] for r in rows[20:200]} == {"calm"}
    assert {r[2] for r in rows[205:300]} <= {"normal", "stressed"}  # volatile from tick 200
    # causal: the first 400 rows are labelled the same without the rest of the file
    head = isolated / "head.csv"
    head.write_text("".join(prices.read_text().splitlines(keepends=True)[:401]))
    assert invoke("regime", head, "--out", isolated / "head_labels.csv")[0] == 0
    assert read_labels(isolated / "head_labels.csv")[1] == rows[:400]


def test_regime_plot_writes_a_png(prices: Path, isolated: Path, trained: Path) -> None:
    code, out = invoke("regime", prices, "--out", isolated / "l.csv", "--plot", isolated / "r.png",
                       "--model", "regime@1")
    assert code == 0, out
    assert (isolated / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_regime_plot_without_matplotlib_fails_clearly(prices: Path, isolated: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    code, out = invoke("regime", prices, "--out", isolated / "l.csv", "--plot", isolated / "r.png")
    assert code == 1 and "--plot needs matplotlib" in out and "pip install matplotlib" in out
    assert not (isolated / "l.csv").exists()  # failed before doing the work


def test_regime_without_a_model_says_how_to_train(prices: Path, isolated: Path) -> None:
    code, out = invoke("regime", prices, "--out", isolated / "l.csv")
    assert code == 1
    assert "convergence models train regime --input FILE.csv" in out and "--fit" in out
    assert str(isolated / "models") in out


def test_regime_fit_trains_on_the_file_with_a_warning(prices: Path, isolated: Path) -> None:
    code, out = invoke("regime", prices, "--out", isolated / "l.csv", "--fit")
    assert code == 0, out
    assert "warning" in out and "saw the future" in out
    assert len(read_labels(isolated / "l.csv")[1]) == 600
    assert not (isolated / "models").exists()  # --fit does not touch the registry


def test_regime_and_training_say_when_rows_were_merged(prices: Path, isolated: Path,
                                                     trained: Path) -> None:
    lines = prices.read_text().splitlines()
    prices.write_text("\n".join([*lines, lines[-1]]) + "\n")  # the last row sent twice
    code, out = invoke("regime", prices, "--out", isolated / "l.csv")
    assert code == 0, out
    assert "note:" in out and "merged 2 rows sharing a timestamp into 1" in out
    assert len(read_labels(isolated / "l.csv")[1]) == 600
    code, out = invoke("models", "train", "regime", "--input", prices, *FAST)
    assert code == 0 and "merged 2 rows sharing a timestamp into 1" in out


@pytest.mark.parametrize(("ref", "message"), [
    ("regime@7", "has no version 7"),
    ("regime@x", "must be a positive integer"),
    ("other", "no model named 'other'"),
])
def test_regime_bad_model_reference(prices: Path, isolated: Path, trained: Path, ref: str,
                                    message: str) -> None:
    code, out = invoke("regime", prices, "--out", isolated / "l.csv", "--model", ref)
    assert code == 1 and message in out


@pytest.mark.parametrize(("content", "message"), [
    ("time,price\n1,2\n", "header must name the columns 'timestamp' and 'value'"),
    ("timestamp,value\n1,100\n2,abc\n", "line 3: value 'abc' is not a number"),
    ("timestamp,value\n1,100\nyesterday,101\n", "line 3: timestamp 'yesterday' is neither"),
    ("timestamp,value\n5,100\n4,\n", "line 3: value '' is not a number"),  # (4 before 5: sorted)
    ("timestamp,value\n1,100\n2,101,7\n", "line 3: expected 2 fields"),
    ("timestamp,value\n1,nan\n", "line 2: value 'nan' is not finite"),
    ("", "is empty"),
    ("timestamp,value\n", "no data rows"),
])
def test_bad_csv_fails_with_the_line_and_no_traceback(isolated: Path, content: str,
                                                      message: str) -> None:
    bad = isolated / "bad.csv"
    bad.write_text(content)
    for args in (["models", "train", "regime", "--input", bad],
                 ["regime", bad, "--out", isolated / "l.csv", "--fit"]):
        code, out = invoke(*args)
        assert code == 1 and message in " ".join(out.split()), out


def test_missing_file_and_unusable_values(isolated: Path, prices: Path, trained: Path) -> None:
    code, out = invoke("models", "train", "regime", "--input", isolated / "nope.csv")
    assert code == 1 and "cannot open" in out
    neg = isolated / "neg.csv"
    neg.write_text(prices.read_text().replace("\n1700000600,", "\n1700000600,-"))
    code, out = invoke("models", "train", "regime", "--input", neg, "--kind", "price")
    assert code == 1 and "cannot train" in out and "> 0" in out
    code, out = invoke("regime", neg, "--out", isolated / "l.csv")
    assert code == 1 and "timestamp '1700000600'" in out and "prices > 0" in out


def test_iso_timestamps_and_bad_name(isolated: Path) -> None:
    iso = write_prices(isolated / "iso.csv", n=400, iso=True)
    code, out = invoke("models", "train", "regime", "--input", iso, *FAST, "--name", "../x")
    assert code == 1 and "is not allowed" in out
    assert invoke("models", "train", "regime", "--input", iso, *FAST)[0] == 0
    assert invoke("regime", iso, "--out", isolated / "l.csv")[0] == 0
    assert read_labels(isolated / "l.csv")[1][0][0] == "2024-03-01T00:00:00Z"


# -- issue 11, item 16: a damaged folder, meter rows, candidates ---------------------------


def test_list_survives_a_damaged_model_folder(prices: Path, isolated: Path, trained: Path) -> None:
    bad = trained / "regime" / "v0002"
    bad.mkdir()
    (bad / "meta.json").write_text("{not json")
    (trained / "junk").write_text("not a model folder")
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert "regime@1" in result.stdout
    assert "skipped a damaged model" in result.stderr and "v0002" in result.stderr
    as_json = runner.invoke(app, ["models", "list", "--json"])
    assert [m["version"] for m in json.loads(as_json.stdout)] == [1]


def test_list_shows_meter_models_with_their_quality_and_status(isolated: Path) -> None:
    from convergence.models.meter_model import train_meter

    scratch = ModelRegistry(isolated / "scratch")
    trained = train_meter(scratch, runs=2, folds=2, seed=7, num_rounds=10, scenarios=FEW)
    # kept as a candidate (as a model worse than the rule is): listed as one, never in use
    reg = ModelRegistry(isolated / "models")
    reg.save_text("meter", trained.booster.model_to_string(),
                  {**trained.record.metadata, "status": "candidate"})
    result = runner.invoke(app, ["models", "list", "--json"])
    row = json.loads(result.stdout)[0]
    assert row["status"] == "candidate" and row["in_use"] is False
    wide = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["models", "list"])
    line = next(x for x in wide.stdout.splitlines() if "meter@1" in x)
    held = trained.metrics["heldout_learned"]
    for words in ("lightgbm meter", "2 runs x 4 scenarios, seed 7 (held out: 8)", "AUC 0.",
                  f"held out: {held['detected']} detected", "candidate (worse than the rule)"):
        assert words in line, line


def test_a_count_model_on_a_price_file_is_an_error_not_all_calm(prices: Path,
                                                                isolated: Path) -> None:
    counts = isolated / "counts.csv"
    rng = np.random.default_rng(3)
    counts.write_text("timestamp,value\n" + "".join(
        f"{1_700_000_000 + 60 * i},{int(c)}\n" for i, c in enumerate(rng.poisson(5, 600))))
    code, out = invoke("models", "train", "regime", "--input", counts, *FAST, "--name", "msgs")
    assert code == 0, out
    code, out = invoke("regime", prices, "--out", isolated / "l.csv", "--model", "msgs@1")
    assert code == 1, out
    flat = " ".join(out.split())
    assert "msgs@1 is a count model" in flat and "looks like a price series" in flat
    assert not (isolated / "l.csv").exists()
