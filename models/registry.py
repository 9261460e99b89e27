"""The model registry: trained models as versioned files under one directory.

Layout (``root`` is ``settings.models_path``)::

    root/<name>/v0001/model.npz    # arrays (HMM parameters), or model.txt / model.bin
    root/<name>/v0001/meta.json    # name, version, created, format, training metadata

Versions count up per name from 1. A version is claimed by creating its directory
(atomic, so two trainers saving at once get different versions) and becomes visible
only once ``meta.json`` is in place (written last, via rename), so a reader never
sees a half-written model. Payloads are plain files: ``.npz`` read with
``allow_pickle=False``, text (LightGBM ``model_to_string()``) or raw bytes; nothing is
unpickled.

Examples
--------
>>> import tempfile
>>> import numpy as np
>>> reg = ModelRegistry(Path(tempfile.mkdtemp()))
>>> rec = reg.save_arrays("regime", {"transmat": np.eye(2)}, {"source": "prices.csv"})
>>> rec.version, reg.save_text("regime", "tree 0", {}).version
(1, 2)
>>> record, arrays = reg.load("regime", version=1)
>>> record.metadata["source"], arrays["transmat"].tolist()
('prices.csv', [[1.0, 0.0], [0.0, 1.0]])
>>> reg.load_text("regime")[1], [r.version for r in reg.list()]
('tree 0', [1, 2])
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from convergence.detectors.base import Array

__all__ = [
    "FORMATS",
    "ModelNotFound",
    "ModelRecord",
    "ModelRegistry",
    "RegistryError",
]

#: payload format -> file name inside a version directory
FORMATS = {"npz": "model.npz", "text": "model.txt", "bytes": "model.bin"}
META = "meta.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION_DIR = re.compile(r"^v(\d{4,})$")


class RegistryError(Exception):
    """The registry cannot do what was asked; the message names the file and the fix."""


class ModelNotFound(RegistryError, LookupError):
    """No such model (or version) in the registry."""


@dataclass(frozen=True)
class ModelRecord:
    """One saved model version, as described by its ``meta.json``."""

    name: str
    version: int
    created: str  # ISO-8601 UTC
    format: str  # one of FORMATS
    path: Path  # the version directory
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def payload_path(self) -> Path:
        return self.path / FORMATS[self.format]

    @property
    def ref(self) -> str:
        """``name@version``, the form the CLI accepts."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "created": self.created,
                "format": self.format, "path": str(self.path), "metadata": dict(self.metadata)}


def check_name(name: str) -> None:
    """Raise :class:`RegistryError` unless ``name`` is a safe model name."""
    if not _NAME.match(name):
        raise RegistryError(
            f"model name {name!r} is not allowed: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (e.g. 'regime' or 'regime-btc')"
        )


class ModelRegistry:
    """Save and load versioned models under ``root`` (created on first save)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- saving -----------------------------------------------------------
    def save_arrays(self, name: str, arrays: Mapping[str, Array],
                    metadata: Mapping[str, Any]) -> ModelRecord:
        """Save named numpy arrays (``.npz``) as the next version of ``name``."""
        clean = {k: np.asarray(v) for k, v in arrays.items()}
        if any(v.dtype == object for v in clean.values()):
            raise RegistryError("arrays must have numeric/string dtypes (object arrays would "
                                "need pickle to load, which the registry refuses)")

        def write(path: Path) -> None:
            with path.open("wb") as fh:
                np.savez(fh, **clean)  # type: ignore[arg-type]

        return self._save(name, "npz", write, metadata)

    def save_text(self, name: str, text: str, metadata: Mapping[str, Any]) -> ModelRecord:
        """Save a text payload (e.g. LightGBM ``model_to_string()``)."""
        return self._save(name, "text", lambda p: p.write_text(text, encoding="utf-8"), metadata)

    def save_bytes(self, name: str, data: bytes, metadata: Mapping[str, Any]) -> ModelRecord:
        """Save an opaque bytes payload."""
        return self._save(name, "bytes", lambda p: p.write_bytes(data), metadata)

    def _save(self, name: str, fmt: str, write: Any, metadata: Mapping[str, Any]) -> ModelRecord:
        check_name(name)
        try:
            meta_json = json.dumps(dict(metadata), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RegistryError(
                f"training metadata for {name!r} is not plain JSON: {exc}"
            ) from None
        base = self.root / name
        try:
            base.mkdir(parents=True, exist_ok=True)
            vdir, version = self._claim_version(base)
        except OSError as exc:
            raise RegistryError(f"cannot create model directory under {base}: {exc}; "
                                "check the path and permissions (setting models_dir)") from None
        now = time.time()
        created = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
        meta = {"name": name, "version": version, "created": created, "created_s": now,
                "format": fmt, "metadata": json.loads(meta_json)}
        try:
            write(vdir / FORMATS[fmt])
            tmp = vdir / (META + ".tmp")
            tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, vdir / META)  # last: the version is visible once complete
        except OSError as exc:
            shutil.rmtree(vdir, ignore_errors=True)
            raise RegistryError(f"cannot write model {name!r} to {vdir}: {exc}") from None
        return ModelRecord(name, version, created, fmt, vdir, meta["metadata"])

    @staticmethod
    def _claim_version(base: Path) -> tuple[Path, int]:
        used = [int(m.group(1)) for p in base.iterdir() if (m := _VERSION_DIR.match(p.name))]
        version = max(used, default=0) + 1
        while True:
            vdir = base / f"v{version:04d}"
            try:
                vdir.mkdir()  # atomic: a concurrent saver gets FileExistsError and moves on
                return vdir, version
            except FileExistsError:
                version += 1

    # -- reading ----------------------------------------------------------
    def list(self, name: str | None = None, *,
             skipped: list[str] | None = None) -> list[ModelRecord]:
        """Every complete model version, sorted by name then version.

        A version whose ``meta.json`` cannot be read raises :class:`RegistryError`,
        unless ``skipped`` is given: then it is left out and the reason appended there
        (one damaged folder must not hide every other model).
        """
        if name is not None:
            check_name(name)
        try:
            if not self.root.is_dir():
                return []
            names = [name] if name is not None else sorted(
                p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))
        except OSError as exc:
            raise RegistryError(f"cannot read the model registry {self.root}: {exc}") from None
        out: list[ModelRecord] = []
        for nm in names:
            base = self.root / nm
            try:
                if not base.is_dir():
                    continue
                versions = sorted(int(m.group(1)) for p in base.iterdir()
                                  if (m := _VERSION_DIR.match(p.name)) and (p / META).is_file())
            except OSError as exc:
                if skipped is None:
                    raise RegistryError(f"cannot read {base}: {exc}") from None
                skipped.append(f"{base}: cannot be read ({exc})")
                continue
            for v in versions:
                try:
                    out.append(self._read_meta(base / f"v{v:04d}"))
                except RegistryError as exc:
                    if skipped is None:
                        raise
                    skipped.append(str(exc))
        return out

    def latest(self, name: str, *, train_hint: str | None = None) -> ModelRecord:
        """The highest version of ``name``; :class:`ModelNotFound` if there is none.

        The error suggests ``train_hint`` (default ``convergence models train <name>``).
        """
        records = self.list(name)
        if not records:
            hint = train_hint or f"convergence models train {name}"
            have = sorted({r.name for r in self.list(skipped=[])})
            where = (f"{self.root} does not exist" if not self.root.is_dir()
                     else f"{self.root} has " + (", ".join(have) if have else "no models"))
            raise ModelNotFound(
                f"no model named {name!r} in the model registry ({where}); train one with "
                f"`{hint}`, or point CONVERGENCE_MODELS_DIR at the directory that has it"
            )
        return records[-1]

    def record(self, name: str, version: int | None = None, *,
               train_hint: str | None = None) -> ModelRecord:
        """The record of ``name`` at ``version`` (default: latest)."""
        if version is None:
            return self.latest(name, train_hint=train_hint)
        damaged: list[str] = []
        records = self.list(name, skipped=damaged)
        for rec in records:
            if rec.version == version:
                return rec
        wanted = str(self.root / name / f"v{version:04d}")
        for problem in damaged:
            if wanted in problem:
                raise RegistryError(problem)
        if not records:
            self.latest(name, train_hint=train_hint)  # raises with the full explanation
        raise ModelNotFound(
            f"model {name!r} has no version {version} in {self.root / name}; it has versions "
            f"{', '.join(str(r.version) for r in records)}"
        )

    def load(self, name: str, version: int | None = None, *,
             train_hint: str | None = None) -> tuple[ModelRecord, dict[str, Array]]:
        """Record and arrays of an ``.npz`` model (default: latest version)."""
        rec = self._expect(self.record(name, version, train_hint=train_hint), "npz")
        try:
            with np.load(rec.payload_path, allow_pickle=False) as npz:
                return rec, {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {rec.payload_path}: {exc}; the file is damaged - "
                                f"delete {rec.path} and train again") from None

    def load_text(self, name: str, version: int | None = None, *,
                  train_hint: str | None = None) -> tuple[ModelRecord, str]:
        """Record and text of a text model (default: latest version)."""
        rec = self._expect(self.record(name, version, train_hint=train_hint), "text")
        try:
            return rec, rec.payload_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistryError(f"cannot read {rec.payload_path}: {exc}") from None

    def load_bytes(self, name: str, version: int | None = None, *,
                   train_hint: str | None = None) -> tuple[ModelRecord, bytes]:
        """Record and bytes of a bytes model (default: latest version)."""
        rec = self._expect(self.record(name, version, train_hint=train_hint), "bytes")
        try:
            return rec, rec.payload_path.read_bytes()
        except OSError as exc:
            raise RegistryError(f"cannot read {rec.payload_path}: {exc}") from None

    @staticmethod
    def _expect(rec: ModelRecord, fmt: str) -> ModelRecord:
        if rec.format != fmt:
            raise RegistryError(f"model {rec.ref} is stored as {rec.format!r}, not {fmt!r}; "
                                "is this the model you meant?")
        return rec

    @staticmethod
    def _read_meta(vdir: Path) -> ModelRecord:
        path = vdir / META
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            rec = ModelRecord(str(meta["name"]), int(meta["version"]), str(meta["created"]),
                              str(meta["format"]), vdir, meta.get("metadata") or {})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"model metadata {path} is unreadable ({exc}); repair it or "
                                f"delete {vdir}") from None
        if rec.format not in FORMATS:
            raise RegistryError(f"model metadata {path} names unknown format {rec.format!r}; "
                                f"expected one of {', '.join(FORMATS)}")
        return rec
