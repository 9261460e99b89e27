"""Training, saving and loading the regime HMM (hmmlearn ``GaussianHMM``).

Training fits a Gaussian HMM with diagonal covariances to the causal features of
one ``timestamp,value`` series (:func:`convergence.detectors.regime.feature_transform`,
the very function inference uses), orders the states by volatility — the variance
of the first feature (log return, or log count) — and names them calm, normal,
choppy, stressed, crisis. The result is a :class:`RegimeModel`: plain arrays that
build the pure-numpy :class:`~convergence.detectors.regime.RegimeFilter` used online;
hmmlearn is needed to train, never to run.

hmmlearn's variance floor and prior (``min_covar = 1e-3``, ``covars_prior = 1e-2``)
assume features of unit scale; a log return's variance is ~1e-4 and would be swamped,
making every state look alike. So EM runs on standardised features (training mean 0,
variance 1) and the fitted means and variances are mapped back to raw feature units.
The filter sees raw features; an affine change of units multiplies every state's
likelihood by the same constant, so the regime probabilities are unchanged.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> r = np.concatenate([rng.normal(0, 0.002, 300), rng.normal(0, 0.02, 100)])
>>> prices = 100 * np.exp(np.cumsum(r))
>>> model = train_regime(prices, n_states=2, seed=1, source="doctest")
>>> model.names, model.kind
(('calm', 'stressed'), 'price')
>>> labels = model.label(prices)["regime"]
>>> [model.names[i] for i in labels[[250, 399]]]
['calm', 'stressed']
>>> [row["state"] for row in model.summary()]
['calm', 'stressed']
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from convergence.detectors.base import Array
from convergence.detectors.regime import (
    DEFAULT_VOL_WINDOW,
    FEATURE_KINDS,
    FEATURE_NAMES,
    RegimeFilter,
    alarm_states,
    feature_transform,
    regime_names,
    stationary_distribution,
)
from convergence.models.registry import ModelRecord, ModelRegistry, RegistryError

__all__ = [
    "KINDS",
    "MODEL_TYPE",
    "RegimeModel",
    "first_invalid",
    "infer_kind",
    "load_regime",
    "save_regime",
    "train_regime",
]

KINDS = ("auto", *FEATURE_KINDS)
MODEL_TYPE = "regime-hmm"
DEFAULT_NAME = "regime"
_ARRAYS = ("startprob", "transmat", "means", "variances", "share")


def _train_hint(name: str) -> str:
    extra = "" if name == DEFAULT_NAME else f" --name {name}"
    return f"convergence models train regime --input FILE.csv{extra}"


def infer_kind(values: npt.ArrayLike) -> str:
    """``"count"`` if every value is a non-negative integer, else ``"price"``.

    An integer-valued price series (whole-cent prices in cents) also reads as
    counts; pass ``kind="price"`` explicitly for those.
    """
    v = np.asarray(values, dtype=np.float64)
    return "count" if v.size and bool(((v >= 0) & (v == np.round(v))).all()) else "price"


def first_invalid(values: npt.ArrayLike, kind: str) -> int | None:
    """Index of the first value the ``kind`` transform cannot use, or ``None``: prices
    must be > 0, counts whole numbers >= 0 (so a price series given to a count model is
    refused, not silently labelled calm).

    >>> first_invalid([3.0, 0.0, 7.0], "count"), first_invalid([3.0, 101.5], "count")
    (None, 1)
    """
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(v) | ((v <= 0) if kind == "price" else ((v < 0) | (v != np.round(v))))
    idx = np.flatnonzero(bad)
    return int(idx[0]) if idx.size else None


@dataclass(frozen=True)
class RegimeModel:
    """A trained regime HMM, states ordered calm -> crisis.

    Attributes
    ----------
    names
        State names, least to most volatile.
    startprob, transmat, means, variances
        HMM parameters (``variances`` is the diagonal, shape ``(n_states, 2)``);
        ``startprob`` is the stationary distribution of ``transmat``.
    kind
        Feature family, ``"price"`` or ``"count"``.
    vol_window
        Returns per realised-volatility estimate (price features).
    share
        Share of training ticks in each state (Viterbi path).
    metadata
        Training metadata (source, samples, seed, params, metrics).
    ref
        ``name@version`` once saved to or loaded from the registry.
    """

    names: tuple[str, ...]
    startprob: Array
    transmat: Array
    means: Array
    variances: Array
    kind: str
    vol_window: int = DEFAULT_VOL_WINDOW
    share: Array = field(default_factory=lambda: np.zeros(0))
    metadata: Mapping[str, Any] = field(default_factory=dict)
    ref: str | None = None

    @property
    def n_states(self) -> int:
        return len(self.names)

    def features(self, values: npt.ArrayLike) -> Array:
        """The causal features of ``values`` (time on axis 0), as used in training."""
        return feature_transform(values, self.kind, self.vol_window)

    def filter(self) -> RegimeFilter:
        """The online filter with these parameters (alarm states: stressed, crisis)."""
        return RegimeFilter(self.startprob, self.transmat, self.means, self.variances,
                            alarm=alarm_states(self.names))

    def label(self, values: npt.ArrayLike) -> dict[str, Array]:
        """Filtered ``probs`` ``(T, n_states)``, ``regime`` and ``regime_z`` of a series.

        Tick ``t`` sees ``values[: t + 1]`` only, exactly as the live filter would.
        """
        feats = self.features(np.asarray(values, dtype=np.float64))
        flt = self.filter()
        state = flt.init_state((1,))
        n = feats.shape[0]
        probs = np.empty((n, self.n_states))
        z = np.empty(n)
        for t in range(n):
            out = flt.step(state, {"features": feats[t][None]})
            probs[t], z[t] = out["probs"][0], out["regime_z"][0]
        return {"probs": probs, "regime": probs.argmax(axis=1), "regime_z": z}

    def summary(self) -> list[dict[str, Any]]:
        """Per state: mean and volatility of the first feature, share of time, duration.

        ``duration_ticks`` is the expected stay, ``1 / (1 - transmat[k, k])`` ticks
        (``inf`` for an absorbing state).
        """
        rows = []
        for k, name in enumerate(self.names):
            stay = float(self.transmat[k, k])
            rows.append({
                "state": name,
                "mean": float(self.means[k, 0]),
                "volatility": float(np.sqrt(self.variances[k, 0])),
                "share": float(self.share[k]) if self.share.size else float("nan"),
                "duration_ticks": float("inf") if stay >= 1.0 else 1.0 / (1.0 - stay),
            })
        return rows

    def to_arrays(self) -> dict[str, Array]:
        return {k: np.asarray(getattr(self, k)) for k in _ARRAYS}


def _fit_once(xs: Array, n_states: int, seed: int, n_iter: int, tol: float,
              on_iter: Callable[[int, float], None]) -> tuple[Any, int, bool]:
    """One seeded EM run on standardised features: (fitted hmm, iterations, converged)."""
    from hmmlearn.base import ConvergenceMonitor  # heavy import (sklearn); only training needs it
    from hmmlearn.hmm import GaussianHMM

    class ProgressMonitor(ConvergenceMonitor):  # type: ignore[misc]
        """hmmlearn's own stopping rule, calling ``on_iter(iteration, ll)`` after each step."""

        def report(self, log_prob: float) -> None:
            super().report(log_prob)
            on_iter(self.iter, float(log_prob))

    hmm = GaussianHMM(n_components=n_states, covariance_type="diag", n_iter=n_iter, tol=tol,
                      random_state=seed, init_params="stmc", params="stmc",
                      implementation="log")
    hmm.monitor_ = ProgressMonitor(tol, n_iter, verbose=False)
    hmm.fit(xs)
    h, iters = hmm.monitor_.history, int(hmm.monitor_.iter)
    # monitor_.converged is also true when n_iter ran out; "converged" here means the
    # last step gained less than tol
    converged = len(h) >= 2 and h[-1] - h[-2] < tol
    return hmm, iters, converged


def train_regime(
    values: npt.ArrayLike,
    *,
    kind: str = "auto",
    n_states: int = 5,
    seed: int = 7,
    n_iter: int = 100,
    n_init: int = 5,
    tol: float = 1e-3,
    vol_window: int = DEFAULT_VOL_WINDOW,
    source: str = "",
    progress: Callable[[int, int, float], None] | None = None,
) -> RegimeModel:
    """Fit a ``GaussianHMM`` to a price or count series; reproducible from ``seed``.

    Parameters
    ----------
    values
        The series, one value per tick, oldest first.
    kind
        ``"price"``, ``"count"`` or ``"auto"`` (:func:`infer_kind`).
    n_states
        Number of regimes (5 gives calm, normal, choppy, stressed, crisis).
    seed
        Seeds hmmlearn's k-means and random initialisation of every restart.
    n_iter, tol
        EM stops after ``n_iter`` iterations or when the log-likelihood gains less
        than ``tol``.
    n_init
        EM restarts from different seeded initialisations; the most likely fit wins.
        EM finds a local optimum, and with five states one start in a few merges two
        regimes and splits another.
    vol_window
        Returns per realised-volatility estimate (price features).
    source
        Where the data came from, recorded in the metadata.
    progress
        Called after every EM iteration with ``(done, total, log_likelihood)``;
        ``total = n_init * n_iter`` and a restart that converges early jumps ``done``
        to the end of its share.

    Raises
    ------
    ValueError
        Bad arguments, invalid values (non-positive prices, negative counts), a
        series too short for ``n_states``, or a constant series.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if n_states < 1:
        raise ValueError(f"n_states must be >= 1, got {n_states}")
    if n_iter < 1 or n_init < 1:
        raise ValueError(f"n_iter and n_init must be >= 1, got {n_iter} and {n_init}")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be one series (1-d), got shape {v.shape}")
    feature_kind = infer_kind(v) if kind == "auto" else kind
    bad = first_invalid(v, feature_kind)
    if bad is not None:
        need = "> 0" if feature_kind == "price" else ">= 0 and whole numbers"
        raise ValueError(f"value {float(v[bad])!r} at position {bad} cannot be used: {feature_kind} "
                         f"values must be finite and {need}")
    feats = feature_transform(v, feature_kind, vol_window)
    x = feats[np.isfinite(feats).all(axis=1)]
    need_rows = max(50, 10 * n_states)
    if x.shape[0] < need_rows:
        raise ValueError(
            f"{x.shape[0]} usable feature rows out of {v.size} values; {n_states} states need at "
            f"least {need_rows} (the first rows have no return/volatility yet) - use a longer "
            "series or fewer states"
        )
    center, scale = x.mean(axis=0), x.std(axis=0)
    if (scale <= 0).any():
        raise ValueError("the series is constant (its features have no variance); "
                         "there are no regimes to learn")
    xs = (x - center) / scale
    # log-likelihood in raw feature units (what metrics report): undo the Jacobian of
    # the standardisation, the same constant for every state and iteration
    jacobian = x.shape[0] * float(np.log(scale).sum())
    total = n_init * n_iter

    best: tuple[float, int, Any, int, bool] | None = None
    restart_lls: list[float | None] = []
    hmm_log = logging.getLogger("hmmlearn.base")
    old_level = hmm_log.level
    hmm_log.setLevel(logging.ERROR)  # "not converging" chatter on tiny rounding dips
    try:
        for r, sub_seed in enumerate(np.random.SeedSequence(seed).generate_state(n_init)):
            def on_iter(it: int, ll: float, r: int = r) -> None:
                if progress is not None:
                    progress(r * n_iter + it, total, ll - jacobian)

            hmm, iters, converged = _fit_once(xs, n_states, int(sub_seed), n_iter, tol, on_iter)
            if progress is not None:
                progress((r + 1) * n_iter, total, float(hmm.monitor_.history[-1]) - jacobian)
            fitted = (hmm.startprob_, hmm.transmat_, hmm.means_, hmm.covars_)
            if not all(np.isfinite(a).all() for a in fitted):
                restart_lls.append(None)
                continue
            ll = float(hmm.score(xs)) - jacobian
            restart_lls.append(ll)
            if best is None or ll > best[0]:
                best = (ll, r, hmm, iters, converged)
    finally:
        hmm_log.setLevel(old_level)
    if best is None:
        raise ValueError(f"training diverged (non-finite parameters) in all {n_init} restarts "
                         f"with {n_states} states; try fewer states or more data")
    log_lik, best_restart, hmm, iterations, converged = best

    means = hmm.means_ * scale + center
    variances = np.diagonal(hmm.covars_, axis1=1, axis2=2) * scale**2
    order = np.argsort(variances[:, 0], kind="stable")
    transmat = hmm.transmat_[np.ix_(order, order)]
    # EM's startprob is the posterior of the first training tick, ~one-hot: an accident
    # of where the file began. A new station has no such history, so it starts from
    # the long-run shares of the regimes.
    startprob = stationary_distribution(transmat)
    path = hmm.predict(xs)  # Viterbi
    share = np.bincount(path, minlength=n_states)[order] / path.size
    metadata = {
        "model": MODEL_TYPE,
        "source": source,
        "n_values": int(v.size),
        "n_samples": int(x.shape[0]),
        "seed": seed,
        "params": {"n_states": n_states, "kind": kind, "feature_kind": feature_kind,
                   "features": list(FEATURE_NAMES[feature_kind]), "vol_window": vol_window,
                   "covariance_type": "diag", "startprob": "stationary",
                   "n_iter": n_iter, "n_init": n_init, "tol": tol,
                   "feature_center": center.tolist(), "feature_scale": scale.tolist()},
        "metrics": {"log_likelihood": log_lik,
                    "log_likelihood_per_sample": log_lik / x.shape[0],
                    "bic": float(hmm.bic(xs)) + 2 * jacobian,
                    "iterations": iterations,
                    "converged": converged,
                    "best_restart": best_restart,
                    "restart_log_likelihoods": restart_lls},
    }
    return RegimeModel(
        names=regime_names(n_states),
        startprob=startprob,
        transmat=transmat,
        means=means[order],
        variances=variances[order],
        kind=feature_kind,
        vol_window=vol_window,
        share=share,
        metadata=metadata,
    )


def save_regime(registry: ModelRegistry, model: RegimeModel,
                name: str = DEFAULT_NAME) -> ModelRecord:
    """Save ``model`` as the next version of ``name``."""
    meta = {**model.metadata, "model": MODEL_TYPE, "names": list(model.names),
            "feature_kind": model.kind, "vol_window": model.vol_window}
    return registry.save_arrays(name, model.to_arrays(), meta)


def load_regime(registry: ModelRegistry, name: str = DEFAULT_NAME,
                version: int | None = None) -> RegimeModel:
    """Load a saved regime model (default: the latest version of ``name``).

    Raises :class:`~convergence.models.registry.ModelNotFound` (with the directory
    searched and the training command) or ``RegistryError`` if it is not a regime model.
    """
    rec, arrays = registry.load(name, version, train_hint=_train_hint(name))
    meta: Mapping[str, Any] = rec.metadata
    if meta.get("model") != MODEL_TYPE or any(k not in arrays for k in _ARRAYS):
        raise RegistryError(f"model {rec.ref} in {rec.path} is not a regime HMM (it is "
                            f"{meta.get('model', 'unknown')!r}); pick a regime model with --model")
    try:
        model = RegimeModel(
            names=tuple(str(n) for n in meta["names"]),
            startprob=arrays["startprob"], transmat=arrays["transmat"],
            means=arrays["means"], variances=arrays["variances"],
            kind=str(meta["feature_kind"]), vol_window=int(meta["vol_window"]),
            share=arrays["share"], metadata=meta, ref=rec.ref,
        )
        model.filter()  # validates shapes and probabilities now, not at the first tick
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryError(f"model {rec.ref} in {rec.path} is damaged ({exc}); delete it and "
                            "train again") from None
    if model.kind not in FEATURE_KINDS or len(model.names) != model.startprob.size:
        raise RegistryError(f"model {rec.ref} in {rec.path} has inconsistent metadata "
                            f"(kind {model.kind!r}, {len(model.names)} names for "
                            f"{model.startprob.size} states); delete it and train again")
    return model
