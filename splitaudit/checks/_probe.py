"""Probes (linear classifiers) on the CNN embeddings and on image properties, shared by the distribution checks
and by ``explain``.

Split probes (train vs an evaluation split) are a NumPy logistic regression (``_twosample.logistic_fit``). The class
probe is scikit-learn's ``LogisticRegression`` on the standardised principal components of the embeddings
(:func:`project`), cross-fitted by :func:`class_probe`: the difficulty the checks measure and the one ``explain``
measures come from this one code. In a run each probe is fitted once and memoised with ``ctx.memo``, so
difficulty, separability and leak-impact share one label probe, and split-distinguishability reuses the projection.
Every random choice has a fixed seed; the same data gives the same numbers. scikit-learn is imported only where
embeddings are used (the re-check budget of ``--backbone none`` runs has no room for its import time).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ._twosample import logistic_fit, midranks
from .context import AuditContext

SEED = 0
FOLDS = 5
#: Embeddings are projected on at most this many principal components before a probe sees them: enough for a
#: linear probe to reach the accuracy of the full 1280 dimensions on the datasets we measured, and 20x cheaper.
PCA_DIM = 64
#: A class takes part in the label probe with at least this many training images (one per fold).
MIN_PER_CLASS = FOLDS
Z95 = 1.959963984540054


def _one_thread():  # noqa: ANN202
    """BLAS/OpenMP limited to one thread: these fits are small (10k x 64), and on a busy machine OpenMP's
    spinning worker threads made a 0.1 s logistic regression take 3-7 s (measured on 2 shared cores)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def wilson(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (0, 1 when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def auc_ci(scores: np.ndarray, positive: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """ROC AUC of ``scores`` for ``positive`` with DeLong's 95% confidence interval: (auc, low, high)."""
    pos, neg = scores[positive], scores[~positive]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return 0.5, 0.0, 1.0
    tz = midranks(np.concatenate([pos, neg]))
    tx, ty = midranks(pos), midranks(neg)
    auc = float((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
    v01 = (tz[:m] - tx) / n
    v10 = 1.0 - (tz[m:] - ty) / m
    var = (v01.var(ddof=1) / m if m > 1 else 0.25) + (v10.var(ddof=1) / n if n > 1 else 0.25)
    se = math.sqrt(max(var, 0.0))
    return auc, max(0.0, auc - z * se), min(1.0, auc + z * se)


#: The principal components are fitted on at most this many rows, a seeded sample, and every row is projected on
#: them: the fit's float64 copy and its time grow with the rows it reads (60k 32-px images' 1280-d embeddings: 614 MB
#: and 4.3 s on one core, while the other core idles), and 20,000 rows pin 64 components down (the split probes read
#: at most 20,000 training rows too). Up to this many rows the projection is scikit-learn's PCA, bit for bit.
PCA_FIT_ROWS = 20_000

#: Rows projected on the fitted components at a time (their float64 copy: 40 MiB at 1280 dimensions).
PROJECT_ROWS = 4096


def project(x: np.ndarray, seed: int = SEED, rows: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``x`` (or its ``rows`` only) on their first principal components (at most ``PCA_DIM``), each scaled to
    unit variance. Above :data:`PCA_FIT_ROWS` rows the components are those of a seeded sample of that many."""
    import scipy.linalg  # noqa: F401 - loaded before the thread limit: it applies to the BLAS libraries loaded by then

    rows = np.arange(len(x)) if rows is None else np.asarray(rows)
    k = int(min(PCA_DIM, len(rows) - 1, x.shape[1]))
    from ..memory import release_freed_memory

    with _one_thread():
        if len(rows) <= PCA_FIT_ROWS:
            x64 = _float64_rows(x, rows)
            release_freed_memory()  # the float32 rows just read (a spilled matrix's pages) leave before the SVD's work
            z = randomized_pca(x64, k, seed)
            del x64
        else:
            fit = np.sort(np.random.default_rng(seed).choice(rows, PCA_FIT_ROWS, replace=False))
            x64 = _float64_rows(x, fit)
            release_freed_memory()
            mean = x64.mean(axis=0)
            vt = randomized_pca(x64, k, seed, components=True)
            del x64
            z = np.empty((len(rows), k))
            for s in range(0, len(rows), PROJECT_ROWS):
                block = _float64_rows(x, rows[s : s + PROJECT_ROWS])
                block -= mean
                z[s : s + PROJECT_ROWS] = block @ vt.T
    z /= np.maximum(z.std(axis=0, keepdims=True), 1e-12)
    return z


def _float64_rows(x: np.ndarray, rows: np.ndarray, block: int = 2048) -> np.ndarray:
    """``x[rows].astype(np.float64)`` filled a block of rows at a time: without the gathered float32 copy (98 MiB at
    20k x 1280) beside the float64 one, for the same numbers (the conversion is exact)."""
    rows = np.asarray(rows)
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):  # consecutive: one conversion of a view
        return x[rows[0] : rows[-1] + 1].astype(np.float64)
    out = np.empty((len(rows), x.shape[1]), np.float64)
    for s in range(0, len(rows), block):
        out[s : s + block] = x[rows[s : s + block]]
    return out


def randomized_pca(x: np.ndarray, k: int, seed: int = SEED, *, components: bool = False) -> np.ndarray:
    """The rows of ``x`` (float64, centred in place) on their first ``k`` principal components: scikit-learn's
    ``PCA(k, svd_solver="randomized", random_state=seed).fit_transform(x)`` step for step (Halko et al.'s
    randomized SVD, 10 oversamples, LU-normalised power iterations, signs by the components' largest entries),
    so its answers are bit-identical (``tests/test_bounded_memory.py``). Not importing scikit-learn keeps the
    default check ~150 MiB smaller: its import loads pandas and pyarrow (``sklearn.utils.fixes``) and
    ``scipy.stats``; only the class probe on labelled data still needs it. ``components``: the (k, d) principal
    axes instead (scikit-learn's ``components_``, signs flipped alike), to project other rows on."""
    from scipy import linalg

    x -= x.mean(axis=0)  # centred in place: no second 20k x 1280 float64 copy (196 MiB)
    n_iter = 7 if k < 0.1 * min(x.shape) else 4
    transpose = x.shape[0] < x.shape[1]
    m = x.T if transpose else x
    q = np.random.RandomState(seed).normal(size=(m.shape[1], k + 10))
    for _ in range(n_iter):
        q, _ = linalg.lu(m @ q, permute_l=True, check_finite=False)
        q, _ = linalg.lu(m.T @ q, permute_l=True, check_finite=False)
    q, _ = linalg.qr(m @ q, mode="economic", check_finite=False)
    u_hat, s, vt = linalg.svd(q.T @ m, full_matrices=False, lapack_driver="gesdd")
    u = q @ u_hat
    if transpose:
        u, s, vt = vt[:k].T, s[:k], u[:, :k].T
    else:
        u, s, vt = u[:, :k], s[:k], vt[:k]
    # the sign of each component: its largest entry positive (scikit-learn's svd_flip, u_based_decision=False)
    signs = np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])
    if components:
        return vt * signs[:, np.newaxis]
    u *= signs[np.newaxis, :]
    u *= s[:k]
    return u


def embedding_features(ctx: AuditContext) -> tuple[np.ndarray, np.ndarray]:
    """(n×k standardised principal components of the embeddings, mask of rows that have one); k = 0 when off."""
    return ctx.memo(("probe", "pca"), lambda: _embedding_features(ctx))


def _embedding_features(ctx: AuditContext) -> tuple[np.ndarray, np.ndarray]:
    emb, have = ctx.embeddings
    n = len(have)
    rows = np.flatnonzero(have)
    out = np.zeros((n, 0))
    if emb.shape[1] and len(rows) >= 10:
        z = project(emb, rows=rows)  # the rows converted straight to float64: no float32 gather beside it
        out = np.zeros((n, z.shape[1]))
        out[rows] = z
    return out, have if out.shape[1] else np.zeros(n, bool)


#: Property columns a distinguishability probe sees (log scale where the spread is multiplicative).
PROBE_PROPERTIES = ("width", "height", "aspect", "file_size", "brightness", "contrast", "saturation", "sharpness", "entropy")
LOG_SCALE = frozenset({"width", "height", "aspect", "file_size", "sharpness"})


def property_columns(ctx: AuditContext) -> dict[str, np.ndarray]:
    """Every numeric property as an n-length float64 column (NaN where unknown): the measured ones and the
    feature table's width, height and aspect ratio (width / height)."""
    return ctx.memo(("probe", "property_columns"), lambda: _property_columns(ctx))


def _property_columns(ctx: AuditContext) -> dict[str, np.ndarray]:
    f = ctx.features
    ok = f.ok
    w = np.where(ok, f["width"], 0).astype(np.float64)
    h = np.where(ok, f["height"], 0).astype(np.float64)
    cols = {"width": np.where(ok, w, np.nan), "height": np.where(ok, h, np.nan),
            "aspect": np.where(ok & (h > 0), w / np.maximum(h, 1), np.nan)}
    cols.update(ctx.properties)
    return cols


def property_features(ctx: AuditContext) -> tuple[PropertyMatrix, np.ndarray]:
    """(n×m standardised property matrix with squared terms, mask of usable rows) for distinguishability."""
    return ctx.memo(("probe", "props"), lambda: _property_features(ctx))


@dataclass(frozen=True)
class PropertyMatrix:
    """The standardised property matrix, made for the rows asked: a probe reads at most ~20k training rows and the
    evaluation splits, and the whole n×18 float64 matrix was 144 bytes an image (144 MB at 1M images)."""

    columns: tuple[tuple[np.ndarray, bool, float, float, float], ...]  # (column, log scale, fill, mean, sd)
    have: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.have), 2 * len(self.columns)

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        parts = []
        for column, log, fill, mean, sd in self.columns:
            v = column[rows]
            if log:
                v = np.log1p(np.maximum(v, 0))
            v[~(self.have[rows] & np.isfinite(v))] = fill
            z = (v - mean) / sd
            parts += [z, z * z]  # squares let a linear model see a change of spread, not only of level
        return np.stack(parts, axis=1) if parts else np.zeros((len(self.have[rows]), 0))


def _property_features(ctx: AuditContext) -> tuple[PropertyMatrix, np.ndarray]:
    cols = property_columns(ctx)
    have = ctx.features.ok & np.isfinite(cols["brightness"])
    kept = []
    for name in PROBE_PROPERTIES:
        v = cols[name].copy()
        if name in LOG_SCALE:
            v = np.log1p(np.maximum(v, 0))
        known = have & np.isfinite(v)
        if known.sum() < 2:
            continue
        fill = np.median(v[known])  # unknown (e.g. file size of in-memory arrays): no information
        v[~known] = fill
        sd = v[have].std()
        if sd <= 1e-12:
            continue  # constant across the dataset: nothing to tell splits apart with
        kept.append((cols[name], name in LOG_SCALE, fill, v[have].mean(), sd))
    x = PropertyMatrix(tuple(kept), have)
    return x, have if x.shape[1] else np.zeros(len(have), bool)


@dataclass(frozen=True)
class SplitProbe:
    """Out-of-fold scores of a classifier telling ``split`` from the training split."""

    rows: np.ndarray  # record indices (train rows and the split's rows)
    is_eval: np.ndarray  # True for the evaluation split's rows
    scores: np.ndarray  # out-of-fold decision values (higher = looks more like the evaluation split)
    auc: float
    low: float
    high: float


def split_probe(ctx: AuditContext, kind: str, split: int, *, max_train: int = 20_000) -> SplitProbe | None:
    """Adversarial validation: cross-validated logistic regression on ``kind`` ("embeddings" or "properties")
    predicting train vs ``split``; None when either side has fewer than 10 usable images."""
    return ctx.memo(("probe", "split", kind, split, max_train), lambda: _split_probe(ctx, kind, split, max_train))


def _split_probe(ctx: AuditContext, kind: str, split: int, max_train: int) -> SplitProbe | None:
    x, have = embedding_features(ctx) if kind == "embeddings" else property_features(ctx)
    s = ctx.split_index
    train = np.flatnonzero(have & (s == 0))
    other = np.flatnonzero(have & (s == split))
    result: SplitProbe | None = None
    if x.shape[1] and len(train) >= 10 and len(other) >= 10:
        if len(train) > max_train:  # a fixed sample: AUC does not depend on the class ratio
            train = np.sort(np.random.default_rng(SEED).choice(train, max_train, replace=False))
        rows = np.concatenate([train, other])
        y = np.concatenate([np.zeros(len(train), bool), np.ones(len(other), bool)])
        with _one_thread():
            scores = _oof_binary(x[rows], y)
        auc, lo, hi = auc_ci(scores, y)
        result = SplitProbe(rows, y, scores, auc, lo, hi)
    return result


def _logistic(**kw: object):  # noqa: ANN202
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=500, **kw)


def stratified_folds(y: np.ndarray, k: int) -> np.ndarray:
    """Fold number of each row: every class shuffled (fixed seed) and dealt round-robin over ``k`` folds."""
    rng = np.random.default_rng(SEED)
    fold = np.zeros(len(y), np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        fold[idx[rng.permutation(len(idx))]] = np.arange(len(idx)) % k
    return fold


def _oof_binary(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Out-of-fold decision values of a balanced, L2-penalised logistic regression (C=1), NumPy only: the
    property probe runs on every audit, where importing scikit-learn would cost more than the fit."""
    k = int(min(FOLDS, y.sum(), (~y).sum()))
    fold = stratified_folds(y, k)
    scores = np.zeros(len(y))
    for f in range(k):
        held = fold == f
        w, b = logistic_fit(x[~held], y[~held])
        scores[held] = x[held] @ w + b
    return scores


@dataclass(frozen=True)
class LabelProbe:
    """A class probe on the embeddings, fitted on the training split.

    ``proba`` rows are honest predictions: out-of-fold for training images; for evaluation images, from the fold
    model of a randomly assigned fold, so both sides are predicted by models trained on the same 4/5 of train
    (the model never saw the image either way). ``full_proba`` (evaluation rows only, NaN for train) comes from one
    model fitted on all of train: what "a model trained on train" predicts, used for leak impact.
    """

    rows: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    split: np.ndarray
    proba: np.ndarray
    full_proba: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        return self.proba.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.y

    @property
    def p_true(self) -> np.ndarray:
        return self.proba[np.arange(len(self.y)), self.y]

    @property
    def loss(self) -> np.ndarray:
        """Cross-entropy of each image (natural log)."""
        return cross_entropy(self.proba, self.y)

    @property
    def margin(self) -> np.ndarray:
        """Probability of the true class minus the highest other probability (negative = misclassified)."""
        other = self.proba.copy()
        other[np.arange(len(self.y)), self.y] = -np.inf
        return self.p_true - other.max(axis=1)


def cross_entropy(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row: minus the natural log of the probability of the true class ``y``."""
    return -np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0))


def label_probe(ctx: AuditContext) -> LabelProbe | None:
    """The checks' class probe: fitted on the training split, or None without embeddings, labels, or two classes
    with enough training images."""
    # no embeddings, no probe (and no threadpoolctl/sklearn import)
    return ctx.memo(("probe", "labels"), lambda: _fit_label_probe(ctx) if ctx.backbone is not None else None)


def _fit_label_probe(ctx: AuditContext) -> LabelProbe | None:
    x, have = embedding_features(ctx)
    if not x.shape[1]:
        return None
    s = ctx.split_index
    labels = np.array([r.label if r.label is not None else "" for r in ctx.dataset.records], dtype=object)
    labelled = have & np.array([r.label is not None for r in ctx.dataset.records], dtype=bool)
    train_labels, counts = np.unique(labels[labelled & (s == 0)].astype(str), return_counts=True)
    classes = tuple(str(c) for c, n in zip(train_labels, counts) if n >= MIN_PER_CLASS)
    if len(classes) < 2:
        return None
    code = {c: i for i, c in enumerate(classes)}
    rows = np.flatnonzero(labelled & np.isin(labels.astype(str), classes))
    y = np.array([code[str(labels[i])] for i in rows], dtype=np.int64)
    split = s[rows]
    proba, full = class_probe(x[rows], y, len(classes), split == 0)
    return LabelProbe(rows, y, classes, split, proba, full)


def class_probe(x: np.ndarray, y: np.ndarray, n_classes: int, fit: np.ndarray, *, folds: int = FOLDS,
                seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of every row of ``x`` from a logistic regression (C=1) that never saw the row.

    Rows in ``fit`` are predicted out-of-fold (stratified ``folds``-fold); every other row by the model of a
    randomly assigned fold, so both sides are predicted by models trained on the same share of ``fit``. Returns
    (proba, full): ``full`` predicts the other rows with one model fitted on all of ``fit`` (NaN for ``fit`` rows).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    from concurrent.futures import ThreadPoolExecutor

    from ..features.runner import default_workers

    tr, ev = np.flatnonzero(fit), np.flatnonzero(~fit)
    proba = np.zeros((len(x), n_classes))
    full = np.full((len(x), n_classes), np.nan)
    assign = np.random.default_rng(seed).integers(0, folds, len(ev))
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x[tr], y[tr]))

    def fold(f: int) -> None:  # each fit writes its own rows: the fits run side by side
        part, held = splits[f]
        model = _logistic().fit(x[tr[part]], y[tr[part]])
        proba[tr[held]] = _aligned(model, x[tr[held]], n_classes)
        mine = ev[assign == f]
        if len(mine):
            proba[mine] = _aligned(model, x[mine], n_classes)

    def whole() -> None:
        model = _logistic().fit(x[tr], y[tr])
        full[ev] = _aligned(model, x[ev], n_classes)

    jobs = [lambda f=f: fold(f) for f in range(len(splits))] + ([whole] if len(ev) else [])
    with _one_thread(), warnings.catch_warnings():
        # A probe that ranks images by difficulty needs no exact optimum; lbfgs' iteration limit is no user concern.
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Fits on threads, BLAS on one thread each: their products release the GIL (the 60k 32-px check's six fits
        # took 5.5 s one after another). The same models either way: each fit is deterministic on its own.
        with ThreadPoolExecutor(max(1, min(default_workers(), len(jobs))), thread_name_prefix="splitaudit-probe") as pool:
            list(pool.map(lambda job: job(), jobs))
    return proba, full


def _aligned(model: object, x: np.ndarray, n_classes: int) -> np.ndarray:
    """predict_proba with one column per class code (a fold may lack a class)."""
    p = model.predict_proba(x)  # type: ignore[attr-defined]
    out = np.zeros((len(x), n_classes))
    out[:, model.classes_] = p  # type: ignore[attr-defined]
    return out
