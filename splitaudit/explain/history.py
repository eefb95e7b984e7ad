"""Training logs: Keras ``CSVLogger`` files and JSON dumps of ``History.history``, and what their curves say.

The learning-curve diagnosis reads the curves as Keras logged them: where the validation loss bottoms out
(overfitting after that epoch), a validation plateau, curves stuck at chance, validation above training, and
the half-epoch-shifted view (the training value Keras reports for epoch e is an average over the epoch, i.e. the
weights of about epoch e - 1/2; compare validation at epoch e with the mean of the training values of epochs e and
e + 1).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import SplitauditError

ACCURACY_KEYS = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy")


@dataclass(frozen=True)
class History:
    """Per-epoch series by name (``loss``, ``val_loss``, ``accuracy``...), epochs numbered from 1."""

    series: tuple[tuple[str, tuple[float, ...]], ...]
    source: str = ""

    def get(self, name: str) -> tuple[float, ...] | None:
        return dict(self.series).get(name)

    @property
    def epochs(self) -> int:
        return max((len(v) for _, v in self.series), default=0)

    @property
    def accuracy_key(self) -> str | None:
        names = dict(self.series)
        return next((k for k in ACCURACY_KEYS if k in names and f"val_{k}" in names), None)

    def pair(self, metric: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(train, val) series of ``"accuracy"`` (whatever Keras named it) or ``"loss"``."""
        key = self.accuracy_key if metric == "accuracy" else "loss"
        if key is None:
            return None
        t, v = self.get(key), self.get(f"val_{key}")
        return (t, v) if t is not None and v is not None else None

    def missing(self) -> list[str]:
        """The usual columns this history lacks (``accuracy`` counts under any of Keras' names)."""
        names = dict(self.series)
        acc = next((k for k in ACCURACY_KEYS if k in names or f"val_{k}" in names), "accuracy")
        return [k for k in ("loss", "val_loss", acc, f"val_{acc}") if k not in names]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in self.series}


def _number(value: Any, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SplitauditError(f"history {where}: {value!r} is not a number") from None


def parse_history(source: str | os.PathLike[str] | dict[str, Any]) -> History:
    """Read a CSVLogger CSV, a JSON object of lists (``json.dump(history.history, f)``), or such a dict."""
    if isinstance(source, dict):
        data, name = source, "<dict>"
    else:
        name = os.fspath(source)
        try:
            with open(name, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise SplitauditError(f"cannot read history {name!r}: {exc.strerror or exc}") from exc
        stripped = text.lstrip()
        if stripped.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SplitauditError(f"history {name!r} is not valid JSON: {exc}") from exc
        else:
            data = _csv(text, name)
    if not isinstance(data, dict):
        raise SplitauditError(f"history {name!r} must be an object of per-epoch lists (History.history)")
    series: list[tuple[str, tuple[float, ...]]] = []
    for key in sorted(data):
        values = data[key]
        if key == "epoch":
            continue
        if not isinstance(values, list):
            raise SplitauditError(f"history {name!r}: {key!r} is not a list of per-epoch values")
        series.append((str(key), tuple(_number(v, f"{name!r} {key!r}") for v in values)))
    h = History(tuple(series), name)
    if h.get("loss") is None:
        raise SplitauditError(f"history {name!r} has no 'loss' column; found {[k for k, _ in series]}")
    return h


def _csv(text: str, name: str) -> dict[str, list[float]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise SplitauditError(f"history {name!r} is empty or not a CSVLogger file")
    if "epoch" in rows[0]:
        rows.sort(key=lambda r: _number(r["epoch"], f"{name!r} 'epoch'"))
    return {k: [r[k] for r in rows] for k in rows[0] if k is not None}


@dataclass(frozen=True)
class CurveFinding:
    """One thing the curves show: ``code`` (overfitting, val-plateau, chance-level, val-above-train,
    half-epoch-shift) and a sentence."""

    code: str
    message: str
    data: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": dict(self.data)}


def shifted_train(train: tuple[float, ...]) -> list[float]:
    """Training values at the epochs' ends estimated from running averages: mean of epochs e and e+1."""
    return [(train[e] + train[e + 1]) / 2 for e in range(len(train) - 1)]


#: A curve is at chance when it never rises above chance by more than max(0.05, 2 standard errors), capped here:
#: a curve 0.1 above chance is learning something, whatever the sample size.
CHANCE_TOL_CAP = 0.1


def chance_tolerance(chance: float, n: int | None) -> float:
    tol = max(0.05, 2 * math.sqrt(chance * (1 - chance) / n)) if n else 0.05
    return min(tol, CHANCE_TOL_CAP)


def diagnose_curves(h: History, *, chance: float | None = None, val_size: int | None = None,
                    train_size: int | None = None, owner: str = "") -> list[CurveFinding]:
    """Learning-curve findings from a history; ``chance`` is the accuracy of always guessing the majority class.

    ``owner`` says whose curves these are (``"your history"``, ``"the tool's regularized probe (not your model)"``);
    every message starts with it.
    """
    out: list[CurveFinding] = []
    found = _findings(h, chance, val_size, train_size)
    for c in found:
        message = f"{owner}: {c.message}" if owner else c.message
        out.append(CurveFinding(c.code, message, {**c.data, "curves_of": owner or None}))
    return out


def _findings(h: History, chance: float | None, val_size: int | None, train_size: int | None) -> list[CurveFinding]:
    out: list[CurveFinding] = []
    vl = h.get("val_loss")
    if vl and len(vl) >= 3:
        best = min(range(len(vl)), key=lambda i: vl[i])
        rise = vl[-1] - vl[best]
        if best < len(vl) - 1 and len(vl) - 1 - best >= 2 and rise > max(0.02 * abs(vl[best]), 1e-3):
            out.append(CurveFinding("overfitting", f"validation loss is lowest at epoch {best + 1} ({vl[best]:.4g}) and "
                                    f"rises to {vl[-1]:.4g} by epoch {len(vl)}: overfitting after epoch {best + 1}",
                                    {"best_epoch": best + 1, "best_val_loss": vl[best], "last_val_loss": vl[-1]}))
    acc = h.pair("accuracy")
    if acc:
        t, v = acc
        n = min(len(t), len(v))
        t, v = t[:n], v[:n]
        if n >= 4:
            tail = v[-3:]
            if max(tail) - min(tail) < 0.005 and t[-1] - t[-3] > 0.01:
                out.append(CurveFinding("val-plateau", f"validation accuracy is flat at {v[-1]:.3f} over the last 3 epochs "
                                        f"while training accuracy still rises ({t[-3]:.3f} -> {t[-1]:.3f})",
                                        {"val_accuracy": v[-1]}))
        if chance is not None and n:
            tols = {"training": chance_tolerance(chance, train_size or val_size), "validation": chance_tolerance(chance, val_size)}
            best = {"training": max(t), "validation": max(v)}
            at_chance = [name for name in ("training", "validation") if best[name] <= chance + tols[name]]
            if at_chance:
                tol = max(tols[name] for name in at_chance)
                peak = max(best[name] for name in at_chance)
                out.append(CurveFinding("chance-level", f"{' and '.join(at_chance)} accuracy never rises above chance "
                                        f"(best {peak:.3f}; chance {chance:.3f} + {tol:.3f}): the classes are not being separated",
                                        {"curves": at_chance, "chance": chance, "tolerance": tol,
                                         "best": {name: best[name] for name in at_chance}}))
        if n >= 2 and v[0] > t[0]:
            end = (t[0] + t[1]) / 2  # the training value at epoch 1's end, from the running averages
            out.append(CurveFinding("epoch-1", f"validation accuracy starts {v[0] - t[0]:.4f} above training at epoch 1 (as "
                                    f"logged); the logged training value averages the first epoch's fast-improving "
                                    f"weights: estimated at the epoch's end ({end:.4f}) the gap is {v[0] - end:+.4f}, so "
                                    f"timing accounts for {end - t[0]:+.4f}; the rest is regularization in training "
                                    "mode and data", {"gap": v[0] - t[0], "timing": end - t[0], "rest": v[0] - end}))
        above = [e + 1 for e in range(n) if v[e] > t[e]]
        if above:
            out.append(CurveFinding("val-above-train", f"validation accuracy is above training accuracy in {len(above)} "
                                    f"of {n} epochs (as logged)", {"epochs": above}))
        if n >= 2:
            shifted = shifted_train(t)
            raw = sum(v[e] - t[e] for e in range(n - 1)) / (n - 1)
            sh = sum(v[e] - shifted[e] for e in range(n - 1)) / (n - 1)
            closes = (1 - abs(sh) / abs(raw)) if raw else 0.0
            out.append(CurveFinding("half-epoch-shift", f"shifting the training curve half an epoch to the left changes the "
                                    f"mean val - train accuracy gap from {raw:+.4f} to {sh:+.4f}",
                                    {"mean_gap": raw, "mean_shifted_gap": sh, "share_closed": closes}))
    return out
