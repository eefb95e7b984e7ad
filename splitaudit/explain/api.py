"""``splitaudit.explain``: why does validation come out better (or worse) than training?"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SplitauditError
from ..options import EXPLAIN, Options, build_options
from .data import Difficulty, held_out, inseparable_pairs, leaked_val
from .decompose import ADVICE, CAUSE_WORDS, Decomposition, decompose
from .history import (
    CurveFinding,
    History,
    chance_tolerance,
    diagnose_curves,
    parse_history,
)
from .leak import CopySources, LeakEffect, copy_sources, leak_effect
from .model_diag import ModelDiagnosis
from .modes import (
    GROUPS,
    OutputKind,
    Pass,
    deterministic,
    evaluate,
    layers_by_group,
    mode_passes,
    penalty,
)
from .probes import PLAIN, REGULARIZED, EpochRecord, ProbeConfig, train_probe
from .report import DataSummary, Diagnosis, EpochGap, ExplainReport, Subject

if TYPE_CHECKING:
    from ..run import Progress

PIXEL_SIDE = 16  # without a backbone the probes see 16x16 RGB thumbnails
#: Advice follows a decomposition cause when its term is at least this large and at least half the largest cause.
ADVICE_MIN_TERM = 0.01
#: Over-regularization: the subject's training accuracy (inference mode) is this far below the plain probe's.
UNDERFIT_MARGIN = 0.15
#: The data terms in words, (when they favour validation, when they favour training).
DATA_WORDS = {
    "difficulty": ("validation images that are easier than the training images",
                   "validation images that are harder than the training images"),
    "generalization": ("the model fitting new images better than its own training images (it underfits them)",
                       "the model fitting its own training images better than new ones"),
    "leakage": ("validation images that copy training images", "copies of training images that score below the rest of val"),
}


def explain(
    train: Any,
    val: Any,
    *,
    model: str | os.PathLike[str] | None = None,
    history: str | os.PathLike[str] | dict[str, list[float]] | None = None,
    val_loss_includes_penalty: bool = True,
    options: Options | None = None,
    progress: Progress | None = None,
    **settings: Any,
) -> ExplainReport:
    """Measure why validation scores differ from training, term by term.

    Trains two small Keras probes on the images' cached embeddings (a plain head, and a regularized head with
    dropout, L2 and BatchNorm), records every epoch in every mode, and decomposes the reported gap
    ``val - train`` exactly into timing, the penalty, dropout, noise, BatchNorm, other training-mode layers,
    difficulty, generalization, leakage and reproduction (see ``docs/explain.md``). With ``model`` the same is
    measured for the user's saved model at its final weights on these images, taking the reported running
    average from ``history``; its BatchNorm layers and input scale are diagnosed too.

    Parameters
    ----------
    train, val:
        The two splits: folders in the Keras layout (``train/<class>/*.png``) or ``(x, y)`` arrays. Labels needed.
    model:
        A saved Keras model (``model.keras``) trained on these splits (classes in sorted order, as
        ``image_dataset_from_directory`` assigns them).
    history:
        A CSVLogger CSV, a JSON dump of ``History.history``, or that dict: the learning curves to diagnose and,
        with ``model``, the reported training and validation values of the last epoch.
    val_loss_includes_penalty:
        Whether the logged validation loss includes the L1/L2 penalty (Keras 3: yes); if not, the penalty is a term.
    options, **settings:
        :class:`~splitaudit.options.Options` and its fields that apply to ``explain``: ``epochs``, ``batch_size``,
        ``seed`` (fixes every source of randomness: probe initialisation and shuffles, dropout masks and noise in
        training-mode passes, the held-out probe's folds; stated in the report: the same data, options and seed give
        byte-identical JSON; ``batch_size`` is also
        the batch size of every training-mode evaluation, as BatchNorm's batch statistics depend on it),
        ``metric`` (the gap the headline decomposes: ``"both"``, default, ``"accuracy"`` or ``"loss"``; both are
        always computed and reported), ``probe_dropout``, ``probe_l2``, ``probe_noise`` (the regularized probe's dropout rate, L2 factor and
        Gaussian input noise in feature standard deviations), ``input_scale`` (``"auto"``: the pixel range the
        model scores best on, ``"0-1"``, ``"-1-1"`` or ``"0-255"``), and as for :func:`splitaudit.audit`
        ``backbone``, ``weights``, ``image_size``, ``cache``, ``cache_dir``, ``workers``, ``draft``,
        ``max_pixels``; ``backbone="none"`` makes the probes use 16x16 pixel thumbnails.
    progress:
        Called as ``progress(stage, done, total)``.

    Returns
    -------
    ExplainReport
        Subjects (probes, the model) with accuracy and loss decompositions, the data evidence, diagnoses
        (``over-regularization``, ``not-separable``, ``chance-level``, ``leakage``, ``easier-val``,
        ``input-scale``, ``batchnorm-lag``, learning-curve findings), a one-sentence summary and advice.

    Raises
    ------
    SplitauditError
        Bad arguments, unlabelled or unreadable inputs, a model that does not fit the data.
    """
    from ..run import open_run

    o = build_options(EXPLAIN, "explain", options, settings).only(EXPLAIN)
    if o.seed is None:
        o = o.replace(seed=0)  # explain's documented default; check needs no seed unless it splits like Keras
    hist = parse_history(history) if history is not None else None

    with open_run((train, val), options=o, progress=progress) as ctx:
        dataset = ctx.dataset
        # Cheap checks first: labels and the model are refused before anything is decoded, embedded or trained.
        if any(r.label is None for r in dataset.records):
            raise SplitauditError("explain needs labelled images: folders in the train/<class>/... layout, a manifest, or (x, y) arrays")
        # Classes in sorted order over both splits, as image_dataset_from_directory numbers them.
        names = sorted({str(r.label) for r in dataset.records})
        if len(names) < 2:
            raise SplitauditError(f"explain needs at least two classes; found {names}")
        loaded = None
        if model is not None:
            from . import model_diag as md

            m = md.load_model(model)
            loaded = (m, md.input_shape(m), md.output_kind(m, len(names)))

        f = ctx.features
        rows = np.flatnonzero(f.ok)
        if ctx.backbone is not None:
            emb, have = ctx.embeddings
            rows = rows[have[rows]]
            feats, features = emb[rows], ctx.backbone.identity
        else:
            feats, features = _pixel_features(dataset, rows, o.max_pixels), f"pixels:{PIXEL_SIDE}"
        split = ctx.split_index[rows]
        leaked_rows = leaked_val(ctx, rows[split == 1])
        sources = copy_sources(ctx, rows[split == 1])
        native = _native_size(f, rows)


    records = [dataset.records[i] for i in rows]
    index = {n: i for i, n in enumerate(names)}
    labels = np.asarray([index[str(r.label)] for r in records], np.int64)
    is_train, is_val = split == 0, split == 1
    if is_train.sum() == 0 or is_val.sum() == 0:
        raise SplitauditError("explain needs decodable images in both splits")
    mu, sd = feats[is_train].mean(axis=0), feats[is_train].std(axis=0)
    x = ((feats - mu) / (sd + 1e-6)).astype(np.float32)  # the heads train far better on standardised inputs
    xt, yt, xv, yv = x[is_train], labels[is_train], x[is_val], labels[is_val]

    # Difficulty and separability: a held-out probe on train plus the copy-free part of val.
    clean_val = np.flatnonzero(is_val)[~leaked_rows]
    pool = np.concatenate([np.flatnonzero(is_train), clean_val])
    pool_val = np.concatenate([np.zeros(int(is_train.sum()), bool), np.ones(len(clean_val), bool)])
    if progress:
        progress("held-out probe", 0, 1)
    ho = held_out(feats[pool], labels[pool], pool_val, len(names), o.seed)
    diff: Difficulty | None = ho[0] if ho else None
    pairs = inseparable_pairs(ho[1], labels[pool], names) if ho else []

    subjects: list[Subject] = []
    cfg = ProbeConfig(epochs=o.epochs, batch_size=o.batch_size, seed=o.seed, dropout=o.probe_dropout, l2=o.probe_l2, noise=o.probe_noise)
    runs = {}
    model_diag: ModelDiagnosis | None = None
    model_val: Pass | None = None
    extra: list[Diagnosis] = []
    prepared = None
    if loaded is not None:  # the model's inputs first: a model that does not fit the images is refused before training
        if progress:
            progress("loading images for the model", 0, 1)
        prepared = _model_inputs(loaded, dataset, records, is_train, is_val, labels, o.input_scale, o.max_pixels, native)
        if prepared[3] is not None:
            extra.append(prepared[3])
    with deterministic(o.seed):
        for i, kind in enumerate((PLAIN, REGULARIZED)):
            if progress:
                progress("training probes", i, 2)
            run = train_probe(kind, xt, yt, xv, yv, len(names), cfg, clean=~leaked_rows)
            runs[kind] = run
            last = run.epochs[-1]
            subjects.append(_subject(kind, run.final_modes, run.final_val, leaked_rows, diff,
                                     reported=(last.reported_accuracy, None, last.reported_loss, None),
                                     pen=last.penalty, val_includes_penalty=True, epochs_=run.epochs))
        if loaded is not None and prepared is not None:
            if progress:
                progress("evaluating the model", 0, 1)
            subject, model_diag, model_val = _model_subject(model, loaded, prepared, is_train, is_val, labels, leaked_rows,
                                                            diff, hist, o.batch_size, o.seed, val_loss_includes_penalty)
            subjects.append(subject)
    if progress:
        progress("diagnosing", 0, 1)
    primary = "model" if model is not None else REGULARIZED

    val_counts = np.bincount(yv, minlength=len(names))
    train_counts = np.bincount(yt, minlength=len(names))
    chance = float(val_counts.max() / val_counts.sum())
    if hist is not None:
        curve_source, owner = hist, "your history"
    else:
        curve_source = _probe_history(runs[primary].epochs if primary in runs else ())
        owner = "the tool's regularized probe (not your model)"
    curves = tuple(diagnose_curves(curve_source, chance=chance, val_size=int(is_val.sum()), train_size=int(is_train.sum()),
                                   owner=owner)) if curve_source else ()

    data = DataSummary(
        train=dataset.split_names[0], val=dataset.split_names[1],
        train_images=int(is_train.sum()), val_images=int(is_val.sum()), classes=tuple(names),
        leaked_val=tuple(r.relpath for r, lk in zip([records[j] for j in np.flatnonzero(is_val)], leaked_rows) if lk),
        difficulty_accuracy=diff.accuracy if diff else None, difficulty_loss=diff.loss if diff else None,
        held_out_train_accuracy=diff.train_accuracy if diff else None,
        held_out_val_accuracy=diff.val_accuracy if diff else None,
        inseparable=tuple(pairs), features=features,
    )
    subs = {s.name: s for s in subjects}
    from .model_diag import regularizers

    regs = {name: regularizers(run.model) for name, run in runs.items()}
    if model_diag is not None:
        regs["model"] = model_diag.regularizers
    leak = _leak_effect(sources, leaked_rows, rows, is_train, runs[REGULARIZED], model_val) \
        if leaked_rows.any() else None
    diagnoses = [*_input_diagnoses(names, train_counts, val_counts, hist), *extra]
    diagnoses += _diagnoses(data, subs, primary, curves, model_diag, chance, diff, len(clean_val), regs, leak)
    summary, advice, cause = _summary(subs[primary], diagnoses, o.metric, data, val_counts)
    return ExplainReport(data, tuple(subjects), primary, summary, advice, tuple(diagnoses), hist, curves, model_diag,
                         seed=o.seed, metric=o.metric, leak=leak, headline=cause)


#: PIL modes of single-channel images.
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _native_size(f: Any, rows: np.ndarray) -> tuple[int, int, bool] | None:
    """The most common (height, width, grey) among decoded rows: what the images are before any resizing."""
    if not len(rows):
        return None
    keys = [(int(h), int(w), str(m) in GREY_MODES) for h, w, m in zip(f["height"][rows], f["width"][rows], f["mode"][rows])]
    counts: dict[tuple[int, int, bool], int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    return max(sorted(counts), key=lambda k: counts[k])


def _pixel_features(dataset: Any, rows: np.ndarray, max_pixels: int) -> np.ndarray:
    from ..features.embeddings.compute import load_rgb

    out = np.zeros((len(rows), PIXEL_SIDE * PIXEL_SIDE * 3), np.float32)
    for j, i in enumerate(rows.tolist()):
        r = dataset.records[i]
        px = dataset.arrays[r.split][r.array_index] if r.array_index >= 0 else None
        rgb = load_rgb(r.path, px, PIXEL_SIDE, max_pixels=max_pixels)
        if rgb is not None:
            out[j] = rgb.reshape(-1) / 255.0
    return out


def _subject(name: str, modes: tuple[tuple[str, Pass], ...] | list[tuple[str, Pass]], val: Pass, leaked: np.ndarray,
             diff: Difficulty | None, *, reported: tuple[float | None, float | None, float | None, float | None],
             pen: float, val_includes_penalty: bool, epochs_: tuple[EpochRecord, ...] = ()) -> Subject:
    clean = ~leaked
    acc_clean = float(val.correct[clean].mean()) if clean.any() else None
    loss_clean = float(val.losses[clean].mean()) if clean.any() else None
    acc = decompose("accuracy", modes=[(n, p.accuracy) for n, p in modes], val=val.accuracy, val_clean=acc_clean,
                    difficulty=diff.accuracy if diff else None, reported_train=reported[0], reported_val=reported[1])
    loss = decompose("loss", modes=[(n, p.loss) for n, p in modes], val=val.loss, val_clean=loss_clean,
                     difficulty=diff.loss if diff else None, reported_train=reported[2], reported_val=reported[3],
                     penalty=pen, val_includes_penalty=val_includes_penalty)
    return Subject(name, acc, loss, pen, epochs_, tuple(_epoch_gaps(epochs_, diff)))


def _epoch_gaps(epochs_: tuple[EpochRecord, ...], diff: Difficulty | None) -> list[EpochGap]:
    """Every epoch's gap decomposed like the last: timing, the mode terms and the data terms at that epoch's weights."""
    out = []
    for e in epochs_:
        acc = decompose("accuracy", modes=[(n, a) for n, a, _ in e.modes], val=e.val_accuracy,
                        val_clean=e.val_clean_accuracy, difficulty=diff.accuracy if diff else None,
                        reported_train=e.reported_accuracy)
        loss = decompose("loss", modes=[(n, lo) for n, _, lo in e.modes], val=e.val_loss, val_clean=e.val_clean_loss,
                         difficulty=diff.loss if diff else None, reported_train=e.reported_loss, penalty=e.penalty)
        out.append(EpochGap(e.epoch, acc, loss))
    return out


def _model_inputs(loaded: tuple[Any, tuple[int, int, int], OutputKind], dataset: Any, records: list, is_train: np.ndarray,
                  is_val: np.ndarray, labels: np.ndarray, requested_scale: str, max_pixels: int,
                  native: tuple[int, int, bool] | None) -> tuple[np.ndarray, np.ndarray, Any, Diagnosis | None]:
    """The splits as the model takes them (size, colour mode, the evident pixel scale), and the input-size check."""
    from . import model_diag as md

    m, shape, out = loaded
    images, ok = md.load_images(records, dataset.arrays, shape, max_pixels)
    if not ok.all():
        raise SplitauditError(f"{int((~ok).sum())} image(s) could not be loaded at the model's input size {shape}")
    yt = labels[is_train]
    scale = md.input_scale(m, images[is_train], yt, out, requested_scale)
    size = _input_size(shape, native, scale, yt)
    return md.scaled(images[is_train], scale.chosen), md.scaled(images[is_val], scale.chosen), scale, size


def _model_subject(path: Any, loaded: tuple[Any, tuple[int, int, int], OutputKind], prepared: tuple[np.ndarray, np.ndarray, Any, Any],
                   is_train: np.ndarray, is_val: np.ndarray, labels: np.ndarray, leaked: np.ndarray, diff: Difficulty | None,
                   hist: History | None, batch_size: int, seed: int, val_includes_penalty: bool) -> tuple[Subject, ModelDiagnosis, Pass]:
    from . import model_diag as md

    m, shape, out = loaded
    xt, xv, scale, _ = prepared
    yt, yv = labels[is_train], labels[is_val]
    modes = mode_passes(m, xt, yt, out, batch_size=batch_size, seed=seed)
    val = evaluate(m, xv, yv, out)
    reported: list[float | None] = [None, None, None, None]
    if hist is not None:
        for k, metric in enumerate(("accuracy", "loss")):
            pair = hist.pair(metric)
            if pair and pair[0] and pair[1]:
                reported[2 * k], reported[2 * k + 1] = pair[0][-1], pair[1][-1]
    subject = _subject("model", modes, val, leaked, diff, reported=tuple(reported), pen=penalty(m),  # type: ignore[arg-type]
                       val_includes_penalty=val_includes_penalty)
    groups = layers_by_group(m)
    diag = md.ModelDiagnosis(
        path=os.fspath(path), input_shape=tuple(int(s) for s in shape), output_kind=f"{out.kind}{' logits' if out.from_logits else ''}",
        input_scale=scale, batchnorm=md.batchnorm_layers(m, xt), optimizer_steps=md.optimizer_steps(m),
        groups=tuple((g, len(groups[g])) for g in GROUPS), regularizers=md.regularizers(m),
    )
    return subject, diag, val


def _describe_size(h: int, w: int, grey: bool) -> str:
    return f"{h}x{w} {'grey' if grey else 'RGB'}"


def _input_size(shape: tuple[int, int, int], native: tuple[int, int, bool] | None, scale: Any, yt: np.ndarray) -> Diagnosis | None:
    """Images that had to be resized or converted to fit the model: refused when the model then scores its own
    training images at chance (these are not the inputs it was trained on), else named as a diagnosis."""
    if native is None:
        return None
    h, w, grey = native
    mh, mw, mc = shape
    if (h, w) == (mh, mw) and grey == (mc == 1):
        return None
    counts = np.bincount(yt)
    chance = float(counts.max() / counts.sum())
    n = min(len(yt), 512)  # model_diag.SCALE_SAMPLE images scored at each scale
    best = max(a for _, a in scale.accuracy_by_scale)
    tol = chance_tolerance(chance, n)
    what = f"the model takes {mh}x{mw}x{mc} inputs but the images are {_describe_size(h, w, grey)}"
    if best <= chance + tol:
        raise SplitauditError(f"{what}: resized and converted to fit, the model scores {best:.3f} on its own training "
                              f"images (chance {chance:.3f} + {tol:.3f}), so these are not the inputs it was trained on; "
                              "feed the images at the size and colour mode the model was trained with")
    return Diagnosis("input-size", f"{what}: explain resized/converted them to fit (bilinear); the model scores {best:.3f} "
                     "on its training images that way, so the training pipeline evidently did the same (any difference "
                     "shows up in `reproduction`)",
                     {"model_input": [mh, mw, mc], "images": [h, w, 1 if grey else 3], "train_accuracy": best, "chance": chance})


def _probe_history(epochs: tuple[EpochRecord, ...]) -> History | None:
    if not epochs:
        return None
    return History((("accuracy", tuple(e.reported_accuracy for e in epochs)), ("loss", tuple(e.reported_loss for e in epochs)),
                    ("val_accuracy", tuple(e.val_accuracy for e in epochs)),
                    ("val_loss", tuple(e.val_loss + e.penalty for e in epochs))), "probe")


def _leak_effect(sources: CopySources, leaked: np.ndarray, rows: np.ndarray, is_train: np.ndarray, probe: Any,
                 model_val: Pass | None) -> LeakEffect:
    """The copies' effect on validation accuracy, measured where copies are copies (see :mod:`.leak`)."""
    train_pos = {int(r): k for k, r in enumerate(rows[is_train].tolist())}
    same_split = bool(leaked.all()) and {int(s) for s in sources.source[leaked]} >= set(train_pos)
    verified = int((sources.verified & leaked).sum())
    if model_val is not None:
        return leak_effect(model_val.correct[leaked], model_val.correct[~leaked], verified=verified, same_split=same_split,
                           method="model", measured_by="your model")
    train_correct = dict(probe.final_modes)[GROUPS[-1]].correct  # the probe's training images in inference mode
    inherited = [train_correct[train_pos[int(s)]] for s in sources.source[leaked] if int(s) in train_pos]
    return leak_effect(np.asarray(inherited), probe.final_val.correct[~leaked], verified=verified, same_split=same_split,
                       method="inherited", measured_by="the tool's regularized probe")


def _input_diagnoses(names: list[str], train_counts: np.ndarray, val_counts: np.ndarray, hist: History | None) -> list[Diagnosis]:
    """Inputs that make part of the answer impossible: classes with no training image, incomplete histories."""
    out: list[Diagnosis] = []
    only = [k for k in range(len(names)) if train_counts[k] == 0 and val_counts[k] > 0]
    if only:
        n = int(val_counts[only].sum())
        share = n / int(val_counts.sum())
        listed = ", ".join(repr(names[k]) for k in only)
        out.append(Diagnosis("val-only-class", f"{n} validation images ({share:.1%}) belong to {len(only)} class(es) with no "
                             f"training image ({listed}): no model trained on this split can classify them, so validation "
                             f"accuracy is capped at {1 - share:.3f}",
                             {"classes": [names[k] for k in only], "images": n, "share": share}))
    if hist is not None:
        missing = hist.missing()
        if missing:
            found = ", ".join(k for k, _ in hist.series)
            lost = [what for what, keys in (("the accuracy curves and reported accuracies", ("accuracy", "val_accuracy")),
                                            ("the loss curves and reported losses", ("loss", "val_loss")))
                    if any(m.endswith(keys[0]) for m in missing)]
            out.append(Diagnosis("history-incomplete", f"your history lacks {', '.join(missing)} (found: {found}): "
                                 f"{' and '.join(lost) or 'those curves'} cannot be read from it; the decomposition of a "
                                 "missing metric starts at the epoch's end (timing 0)",
                                 {"missing": missing, "found": [k for k, _ in hist.series]}))
    return out


def _diagnoses(data: DataSummary, subs: dict[str, Subject], primary: str, curves: tuple[CurveFinding, ...],
               model_diag: ModelDiagnosis | None, chance: float, diff: Difficulty | None, n_clean: int,
               regs: dict[str, tuple[tuple[str, str, float], ...]], leak: LeakEffect | None) -> list[Diagnosis]:
    from .data import PAIR_MARGIN
    from .model_diag import BN_SHIFT, BN_VAR_FACTOR, describe_regularizers

    out: list[Diagnosis] = []
    for p in data.inseparable:
        threshold = 0.5 + max(PAIR_MARGIN, 2 * math.sqrt(0.25 / p.images))
        out.append(Diagnosis("not-separable", f"classes {p.a!r} and {p.b!r} cannot be told apart: a held-out probe separates "
                             f"them in {p.accuracy:.0%} of {p.images} images (chance 50%, not separable at or below "
                             f"{threshold:.0%})", {"classes": [p.a, p.b], "accuracy": p.accuracy, "threshold": threshold,
                                                   "images": p.images}))
    plain = subs[PLAIN]
    main = subs[primary]
    for c in curves:  # epoch 1 from the curves only where no per-epoch measurement of the primary subject exists
        if c.code in ("chance-level", "overfitting", "val-plateau") or (c.code == "epoch-1" and not main.per_epoch):
            out.append(Diagnosis(c.code, c.message, dict(c.data)))
    for s in ([main] if primary == REGULARIZED else [subs[REGULARIZED], main]):
        # Regularizers proper (penalty, dropout, noise); BatchNorm is not one, and lagging BatchNorm is its own cause.
        has_reg = bool(regs.get(s.name)) or s.penalty > 0
        # Its best fit of the training set: inference mode, or with only BatchNorm left in training mode.
        fit = max(s.train_accuracy, next(t.end for t in s.accuracy.terms if t.name == "noise"))
        gap = plain.train_accuracy - fit
        if has_reg and plain.train_accuracy >= chance + 0.2 and gap > UNDERFIT_MARGIN:
            what = describe_regularizers(regs.get(s.name, ()))
            out.append(Diagnosis("over-regularization", f"{s.name}: over-regularization ({what}): it fits only {fit:.3f} of "
                                 f"its training set where the unregularized probe fits {plain.train_accuracy:.3f}",
                                 {"subject": s.name, "train_accuracy": fit, "plain_train_accuracy": plain.train_accuracy,
                                  "penalty": s.penalty, "regularizers": [list(r) for r in regs.get(s.name, ())],
                                  "threshold": UNDERFIT_MARGIN}))
    out += _epoch_one(main)
    if leak is not None:
        out.append(_leak_diagnosis(data, leak))
    if diff is not None and n_clean:
        se = math.sqrt(max(diff.val_accuracy * (1 - diff.val_accuracy), 0.01) / n_clean)
        threshold = max(0.02, 2 * se)
        if diff.accuracy > threshold:
            out.append(Diagnosis("easier-val", f"validation is easier than training: a held-out probe scores "
                                 f"{diff.val_accuracy:.3f} on validation vs {diff.train_accuracy:.3f} on training images",
                                 {"difficulty": diff.accuracy, "threshold": threshold}))
    if model_diag is not None:
        if model_diag.input_scale.flagged:
            out.append(Diagnosis("input-scale", model_diag.input_scale.message, model_diag.input_scale.to_dict()))
        lag = [b for b in model_diag.batchnorm if b.lagging]
        if lag:
            steps = model_diag.optimizer_steps
            kept = f"; after {steps} optimizer steps a momentum of {lag[0].momentum:g} still keeps " \
                   f"{lag[0].momentum ** steps:.0%} of the initial moving statistics" if steps else ""
            out.append(Diagnosis("batchnorm-lag", f"{len(lag)} of {len(model_diag.batchnorm)} BatchNorm layers have moving "
                                 f"statistics far from their batch statistics on this data (e.g. {lag[0].name}: mean shift "
                                 f"{lag[0].mean_shift:.2f} std, variance ratio {lag[0].variance_ratio:.3g}; lagging beyond "
                                 f"{BN_SHIFT:g} std or {BN_VAR_FACTOR:g}x){kept}",
                                 {"layers": [b.name for b in lag], "mean_shift": lag[0].mean_shift,
                                  "variance_ratio": lag[0].variance_ratio}))
    return out


def _leak_diagnosis(data: DataSummary, leak: LeakEffect) -> Diagnosis:
    n = len(data.leaked_val)
    if leak.same_split:
        what = f"validation is the training set: all {n} validation images copy a training image and every training image is copied"
    else:
        what = f"{n} of {data.val_images} validation images ({data.leaked_share:.1%}) copy a training image (e.g. {data.leaked_val[0]})"
    unverified = leak.copies - leak.verified
    if unverified == leak.copies:
        what += "; none is verified (hash matches only, no pixel or embedding confirmation): possible copies only"
    elif unverified:
        what += f"; {unverified} of them are possible copies only (hash match, not verified at pixel level)"
    return Diagnosis("leakage", f"{what}; {leak.describe()}", {"count": n, "share": data.leaked_share, **leak.to_dict()})


def _epoch_one(s: Subject) -> list[Diagnosis]:
    """Epoch 1 decomposed when validation starts above training there (so often the first thing users see)."""
    if not s.per_epoch:
        return []
    first = s.per_epoch[0].accuracy
    if first.gap <= 0:
        return []
    c = first.causes()
    timing, reg = c["timing"], sum(c[g] for g in GROUPS) + c["penalty"]
    return [Diagnosis("epoch-1", f"{_who(s)}, epoch 1: validation accuracy starts {first.gap:.4f} above training: timing "
                      f"{timing:+.4f} (the reported value averages the first epoch's fast-improving weights) and "
                      f"regularization {reg:+.4f} (dropout, noise, BatchNorm in training mode), against data "
                      f"{c['data']:+.4f}", {"gap": first.gap, "timing": timing, "regularization": reg, "data": c["data"]})]


def _fmt_cause(d: Decomposition, cause: str) -> str:
    if cause == "data":
        sub = d.dominant_data_term
        v = d.term(sub)
        # Orient the words by the sign of the term (for the loss, lower is better).
        better = v > 0 if d.higher_is_better else v < 0
        return f"{CAUSE_WORDS['data']}, mostly {DATA_WORDS[sub][0 if better else 1]} ({v:+.4f})"
    return CAUSE_WORDS[cause]


def _who(s: Subject) -> str:
    return "Your model" if s.name == "model" else f"The tool's {s.name} (not your model)"


def _gap_sentence(s: Subject, d: Decomposition) -> str:
    causes = d.causes()
    dom = d.dominant
    where = "above" if d.gap > 0 else "below" if d.gap < 0 else "level with"
    return (f"{_who(s)}: validation {d.metric} is {where} training by {abs(d.gap):.4f} as reported; the largest share, "
            f"{causes[dom]:+.4f}, is {_fmt_cause(d, dom)}.")


#: Diagnoses that explain the train/validation behaviour before any decomposition term does: they lead the headline.
LEADS = ("val-only-class", "not-separable")


def _summary(s: Subject, diagnoses: list[Diagnosis], metric: str, data: DataSummary,
             val_counts: np.ndarray) -> tuple[str, tuple[str, ...], str]:
    """The headline (leading causes, then the asked-for gap decompositions), advice with its numbers, the cause."""
    by_code: dict[str, list[Diagnosis]] = {}
    for dg in diagnoses:
        by_code.setdefault(dg.code, []).append(dg)
    metrics = ("accuracy", "loss") if metric == "both" else (metric,)
    decomps = [s.accuracy if m == "accuracy" else s.loss for m in metrics]
    parts: list[str] = []
    if "val-only-class" in by_code:
        parts.append(by_code["val-only-class"][0].message[0].upper() + by_code["val-only-class"][0].message[1:] + ".")
    if "not-separable" in by_code:
        p = by_code["not-separable"][0]
        a, b = p.data["classes"]
        k = [data.classes.index(a), data.classes.index(b)]
        cap = 1 - 0.5 * float(val_counts[k].sum()) / float(val_counts.sum())
        more = len(by_code["not-separable"]) - 1
        parts.append(f"Classes {a!r} and {b!r} cannot be told apart (a held-out probe separates them in {p.data['accuracy']:.0%} "
                     f"of {p.data['images']} images, chance 50%){f' (and {more} more pairs)' if more else ''}: that caps "
                     f"validation accuracy near {cap:.3f} and makes the curves move at random.")
    parts += [_gap_sentence(s, d) for d in decomps]
    named = [dg for dg in diagnoses if dg.code == "over-regularization"
             or (dg.code == "chance-level" and "training" in dg.data.get("curves", ()))]
    if named:
        parts.append("Also: " + "; ".join(dg.message for dg in named) + ".")
    cause = next((c for c in LEADS if c in by_code), decomps[0].dominant)
    return " ".join(parts), tuple(_advice(decomps, by_code)), cause


def _advice(decomps: list[Decomposition], by_code: dict[str, list[Diagnosis]]) -> list[str]:
    """Each line: what to do, then in brackets the measured number that triggers it and the threshold."""
    out: list[str] = []

    def add(text: str, because: str) -> None:
        if not any(line.startswith(text) for line in out):
            out.append(f"{text} [{because}]")

    def first(code: str) -> Diagnosis | None:
        return by_code[code][0] if code in by_code else None

    if (dg := first("val-only-class")) is not None:
        add("Put images of the validation-only classes into the training split, or leave them out of validation.",
            f"{dg.data['images']} validation images ({dg.data['share']:.1%}) in {', '.join(map(repr, dg.data['classes']))}, "
            "0 training images")
    for dg in by_code.get("not-separable", []):
        a, b = dg.data["classes"]
        add(f"Check the labels of classes {a!r} and {b!r}, or merge them.",
            f"held-out pair accuracy {dg.data['accuracy']:.3f} <= {dg.data['threshold']:.3f}")
    leak = first("leakage")
    for d in decomps:
        causes = d.causes()
        dom = d.dominant
        for c in [dom, *sorted(causes, key=lambda k: -abs(causes[k]))]:
            v = causes[c]
            if abs(v) < ADVICE_MIN_TERM or abs(v) < 0.5 * abs(causes[dom]):
                continue
            because = (f"{d.metric} {c} term {v:+.4f} of a {d.gap:+.4f} gap; advice at |term| >= {ADVICE_MIN_TERM:g} "
                       "and >= half the largest cause")
            if c != "data":
                add(ADVICE[c], because)
                continue
            g = d.term("generalization")
            worse = g < 0 if d.higher_is_better else g > 0  # validation below its own training fit: overfitting
            # Not with inseparable classes (the labels cap it) nor an over-regularized model (the opposite advice).
            held_back = "not-separable" in by_code or "over-regularization" in by_code
            if d.dominant_data_term == "generalization" and worse and not held_back and abs(g) >= ADVICE_MIN_TERM:
                add(ADVICE["generalization"], f"{d.metric} generalization term {g:+.4f}; " + because.split("; ", 1)[1])
    if leak is not None:
        data = leak.data
        if data["same_split"]:
            add("Validation is the training set: hold out images the model never trains on.",
                f"{data['count']} of {data['val_images']} validation images copy a training image and every training image is copied")
        elif data["verified"]:
            effect = "effect not measurable" if data["effect"] is None else \
                f"effect {data['effect']:+.4f}, 95% interval {data['interval'][0]:+.4f} to {data['interval'][1]:+.4f}"
            add(f"Remove the {data['verified']} validation images verified as copies of training images "
                "(splitaudit check lists them).", f"{data['verified']} verified copies; {effect}")
    extra = {"over-regularization": (("Lower the regularization (dropout rate, L2 factor): the model does not fit its own "
                                      "training set, so validation cannot fall below it."),
                                     lambda dg: f"{dg.data['subject']} fits {dg.data['train_accuracy']:.3f} of its training set vs "
                                                f"{dg.data['plain_train_accuracy']:.3f} unregularized; gap > {dg.data['threshold']:g}"),
             "input-scale": ("Scale inputs to [0, 1] (keras.layers.Rescaling(1/255) as the model's first layer) and retrain.",
                             lambda dg: "accuracy by input scale " + ", ".join(f"{k}: {v:.3f}" for k, v in dg.data["accuracy_by_scale"].items())),
             "batchnorm-lag": (ADVICE["batchnorm"],
                               lambda dg: f"moving mean {dg.data['mean_shift']:.2f} std off, variance ratio "
                                          f"{dg.data['variance_ratio']:.3g}; lagging beyond 0.5 std or 2x"),
             "overfitting": ("Stop at the validation loss minimum (EarlyStopping(restore_best_weights=True)).",
                             lambda dg: f"{dg.data.get('curves_of') or 'curves'}: validation loss {dg.data['best_val_loss']:.4g} at "
                                        f"epoch {dg.data['best_epoch']} rises to {dg.data['last_val_loss']:.4g} (> 2%)"),
             "easier-val": (ADVICE["difficulty"],
                            lambda dg: f"held-out val - train accuracy {dg.data['difficulty']:+.4f} > {dg.data['threshold']:.4f}")}
    for code, (text, because) in extra.items():
        if (dg := first(code)) is not None:
            add(text, because(dg))
    dg = first("chance-level")
    if dg is not None and "training" in dg.data["curves"]:
        add("Nothing is learned: check labels, the input pipeline and the learning rate.",
            f"{dg.data.get('curves_of') or 'curves'}: best training accuracy {dg.data['best']['training']:.3f} <= chance "
            f"{dg.data['chance']:.3f} + {dg.data['tolerance']:.3f}")
    return out
