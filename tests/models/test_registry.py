"""The model registry: versions, payload formats, metadata and the errors people see."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from convergence.models.registry import (
    ModelNotFound,
    ModelRegistry,
    RegistryError,
)


@pytest.fixture
def reg(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models")


def test_arrays_round_trip_with_metadata(reg: ModelRegistry) -> None:
    arrays = {"transmat": np.array([[0.9, 0.1], [0.2, 0.8]]), "names": np.array(["a", "b"])}
    meta = {"source": "prices.csv", "n_samples": 500, "seed": 7, "params": {"n_states": 2},
            "metrics": {"log_likelihood": -12.5}}
    rec = reg.save_arrays("regime", arrays, meta)
    assert (rec.name, rec.version, rec.format, rec.ref) == ("regime", 1, "npz", "regime@1")
    assert rec.payload_path == reg.root / "regime" / "v0001" / "model.npz"
    datetime.fromisoformat(rec.created)  # ISO-8601
    loaded, got = reg.load("regime")
    assert loaded == rec
    assert dict(loaded.metadata) == meta
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)


def test_text_and_bytes_payloads(reg: ModelRegistry) -> None:
    reg.save_text("meter", "tree\nversion=v4\n", {"kind": "lightgbm"})
    reg.save_bytes("blob", b"\x00\x01\xff", {})
    assert reg.load_text("meter")[1] == "tree\nversion=v4\n"
    assert reg.load_bytes("blob")[1] == b"\x00\x01\xff"
    with pytest.raises(RegistryError, match=r"meter@1 is stored as 'text', not 'npz'"):
        reg.load("meter")


def test_versions_increment_per_name_and_latest(reg: ModelRegistry) -> None:
    for i in range(3):
        assert reg.save_arrays("regime", {"x": np.arange(i + 1)}, {"i": i}).version == i + 1
    assert reg.save_text("meter", "m", {}).version == 1
    assert reg.latest("regime").version == 3
    assert reg.load("regime", version=2)[1]["x"].tolist() == [0, 1]
    assert [r.ref for r in reg.list()] == ["meter@1", "regime@1", "regime@2", "regime@3"]
    assert [r.ref for r in reg.list("regime")] == ["regime@1", "regime@2", "regime@3"]


def test_a_half_written_version_is_invisible_and_skipped(reg: ModelRegistry) -> None:
    reg.save_arrays("regime", {"x": np.zeros(1)}, {})
    (reg.root / "regime" / "v0002").mkdir()  # a trainer that crashed before meta.json
    assert [r.version for r in reg.list("regime")] == [1]
    assert reg.save_arrays("regime", {"x": np.zeros(1)}, {}).version == 3


def test_missing_model_error_names_the_directory_and_how_to_train(reg: ModelRegistry) -> None:
    with pytest.raises(ModelNotFound) as info:
        reg.load("regime")
    msg = str(info.value)
    assert str(reg.root) in msg and "does not exist" in msg
    assert "train one with `convergence models train regime`" in msg
    with pytest.raises(ModelNotFound, match=r"train one with `convergence models train meter`"):
        reg.load_text("meter", 2)
    reg.save_text("meter", "m", {})
    with pytest.raises(ModelNotFound, match=r"has meter\); train one with `custom hint`"):
        reg.latest("regime", train_hint="custom hint")
    assert isinstance(info.value, LookupError)


def test_missing_version_lists_the_versions_there_are(reg: ModelRegistry) -> None:
    reg.save_text("meter", "a", {})
    reg.save_text("meter", "b", {})
    with pytest.raises(ModelNotFound, match=r"no version 7 .* has versions 1, 2"):
        reg.load_text("meter", version=7)


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_unsafe_names_are_rejected(reg: ModelRegistry, name: str) -> None:
    with pytest.raises(RegistryError, match="is not allowed"):
        reg.save_text(name, "x", {})


def test_metadata_must_be_plain_json(reg: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="not plain JSON"):
        reg.save_text("m", "x", {"bad": float("nan")})
    with pytest.raises(RegistryError, match="not plain JSON"):
        reg.save_text("m", "x", {"bad": object()})
    assert reg.list() == []  # nothing half-saved


def test_object_arrays_are_refused(reg: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="pickle"):
        reg.save_arrays("m", {"o": np.array([{"a": 1}], dtype=object)}, {})


def test_corrupt_metadata_says_which_file(reg: ModelRegistry) -> None:
    rec = reg.save_text("meter", "m", {})
    (rec.path / "meta.json").write_text("{not json")
    with pytest.raises(RegistryError, match=r"meta\.json is unreadable .* delete"):
        reg.list()


def test_damaged_payload_says_what_to_do(reg: ModelRegistry) -> None:
    rec = reg.save_arrays("regime", {"x": np.zeros(3)}, {})
    rec.payload_path.write_bytes(b"garbage")
    with pytest.raises(RegistryError, match=r"damaged - delete .*v0001 and train again"):
        reg.load("regime")


def test_sidecar_is_readable_json(reg: ModelRegistry) -> None:
    rec = reg.save_text("meter", "m", {"source": "sim"})
    meta = json.loads((rec.path / "meta.json").read_text())
    assert meta["name"] == "meter" and meta["version"] == 1 and meta["format"] == "text"
    assert meta["metadata"] == {"source": "sim"} and meta["created_s"] > 0


def test_empty_or_missing_root_lists_nothing(tmp_path: Path) -> None:
    assert ModelRegistry(tmp_path / "nope").list() == []
    assert ModelRegistry(tmp_path).list() == []


def test_a_damaged_version_is_skipped_and_named_when_asked(reg: ModelRegistry) -> None:
    reg.save_text("meter", "m", {})
    bad = reg.save_text("meter", "m", {})
    reg.save_arrays("regime", {"x": np.zeros(2)}, {})
    (bad.path / "meta.json").write_text("{not json")
    skipped: list[str] = []
    assert [r.ref for r in reg.list(skipped=skipped)] == ["meter@1", "regime@1"]
    assert len(skipped) == 1 and "v0002" in skipped[0] and "delete" in skipped[0]
    with pytest.raises(RegistryError, match=r"v0002/meta\.json is unreadable"):
        reg.record("meter", 2)  # pinned to the damaged one: say so, not "no version 2"
    assert reg.record("regime").ref == "regime@1"  # the others still load
