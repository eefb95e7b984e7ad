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
from .history import CurveFinding, History, diagnose_curves, parse_history
from .modes import GROUPS, OutputKind, Pass, evaluate, layers_by_group, mode_passes, penalty
from .model_diag import ModelDiagnosis
from .probes import PLAIN, REGULARIZED, EpochRecord, ProbeConfig, train_probe
from .report import DataSummary, Diagnosis, ExplainReport, Subject

if TYPE_CHECKING:
    from ..run import Progress

PIXEL_SIDE = 16  # without a backbone the probes see 16x16 RGB thumbnails
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
        ``seed`` (the probes' schedule, fixed seeds: the same data give the same numbers; ``batch_size`` is also
        the batch size of every training-mode evaluation, as BatchNorm's batch statistics depend on it),
        ``probe_dropout``, ``probe_l2``, ``probe_noise`` (the regularized probe's dropout rate, L2 factor and
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

    records = [dataset.records[i] for i in rows]
    index = {n: i for i, n in enumerate(names)}
    labels = np.asarray([index[str(r.label)] for r in records], np.int64)
    is_train, is_val = split == 0, split == 1
    if is_train.sum() == 0 or is_val.sum() == 0:
        raise SplitauditError("explain needs decodable images in both splits")
    mu, sd = feats[is_train].mean(axis=0), feats[is_train].std(axis=0)
    x = ((feats - mu) / (sd + 1e-6)).astype(np.float32)  # the heads train far better on standardised inputs
    xt, yt, xv, yv = x[is_train], labels[is_train], x[is_val], labels[is_val]

    # Difficulty and separability: a held-out probe on train plus the copy-free part of val; the difficulty check's
    # class probe, on the features as that check sees them (not standardised like the heads' inputs).
    clean_val = np.flatnonzero(is_val)[~leaked_rows]
    pool = np.concatenate([np.flatnonzero(is_train), clean_val])
    pool_val = np.concatenate([np.zeros(int(is_train.sum()), bool), np.ones(len(clean_val), bool)])
    if progress:
        progress("held-out probe", 0, 1)
    ho = held_out(feats[pool], labels[pool], pool_val, len(names), o.seed)
    diff: Difficulty | None = ho[0] if ho else None
    pairs = inseparable_pairs(ho[1], labels[pool], names) if ho else []

    subjects: list[Subject] = []
    cfg = ProbeConfig(epochs=o.epochs, batch_size=o.batch_size, seed=o.seed, dropout=o.probe_dropout, l2=o.probe_l2,
                      noise=o.probe_noise)
    runs = {}
    for i, kind in enumerate((PLAIN, REGULARIZED)):
        if progress:
            progress("training probes", i, 2)
        run = train_probe(kind, xt, yt, xv, yv, len(names), cfg)
        runs[kind] = run
        last = run.epochs[-1]
        subjects.append(_subject(kind, run.final_modes, run.final_val, leaked_rows, diff,
                                 reported=(last.reported_accuracy, None, last.reported_loss, None),
                                 pen=last.penalty, val_includes_penalty=True, epochs_=run.epochs))

    model_diag: ModelDiagnosis | None = None
    if model is not None:
        if progress:
            progress("evaluating the model", 0, 1)
        subject, model_diag = _model_subject(model, loaded, dataset, records, is_train, is_val, labels, len(names), leaked_rows,
                                             diff, hist, o.batch_size, o.input_scale, o.max_pixels, o.seed, val_loss_includes_penalty)
        subjects.append(subject)
    primary = "model" if model is not None else REGULARIZED

    val_counts = np.bincount(yv, minlength=len(names))
    chance = float(val_counts.max() / val_counts.sum())
    curve_source = hist if hist is not None else _probe_history(runs[primary].epochs if primary in runs else ())
    curves = tuple(diagnose_curves(curve_source, chance=chance, val_size=int(is_val.sum()))) if curve_source else ()

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
    diagnoses = _diagnoses(data, subs, primary, curves, model_diag, chance, diff, len(clean_val), regs)
    summary, advice = _summary(subs[primary], diagnoses)
    return ExplainReport(data, tuple(subjects), primary, summary, advice, tuple(diagnoses), hist, curves, model_diag)


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
    return Subject(name, acc, loss, pen, epochs_)


def _model_subject(path: Any, loaded: tuple[Any, tuple[int, int, int], OutputKind], dataset: Any, records: list, is_train: np.ndarray, is_val: np.ndarray, labels: np.ndarray,
                   classes: int, leaked: np.ndarray, diff: Difficulty | None, hist: History | None, batch_size: int,
                   requested_scale: str, max_pixels: int, seed: int, val_includes_penalty: bool) -> tuple[Subject, ModelDiagnosis]:
    from . import model_diag as md

    m, shape, out = loaded
    images, ok = md.load_images(records, dataset.arrays, shape, max_pixels)
    if not ok.all():
        raise SplitauditError(f"{int((~ok).sum())} image(s) could not be loaded at the model's input size {shape}")
    yt, yv = labels[is_train], labels[is_val]
    scale = md.input_scale(m, images[is_train], yt, out, requested_scale)
    xt, xv = md.scaled(images[is_train], scale.chosen), md.scaled(images[is_val], scale.chosen)
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
    return subject, diag


def _probe_history(epochs: tuple[EpochRecord, ...]) -> History | None:
    if not epochs:
        return None
    return History((("accuracy", tuple(e.reported_accuracy for e in epochs)), ("loss", tuple(e.reported_loss for e in epochs)),
                    ("val_accuracy", tuple(e.val_accuracy for e in epochs)),
                    ("val_loss", tuple(e.val_loss + e.penalty for e in epochs))), "probe")


def _diagnoses(data: DataSummary, subs: dict[str, Subject], primary: str, curves: tuple[CurveFinding, ...],
               model_diag: ModelDiagnosis | None, chance: float, diff: Difficulty | None, n_clean: int,
               regs: dict[str, tuple[tuple[str, str, float], ...]]) -> list[Diagnosis]:
    from .model_diag import describe_regularizers

    out: list[Diagnosis] = []
    for p in data.inseparable:
        out.append(Diagnosis("not-separable", f"classes {p.a!r} and {p.b!r} are not separable: a held-out probe tells them "
                             f"apart in {p.accuracy:.0%} of {p.images} images (chance 50%); check their labels or merge them",
                             {"classes": [p.a, p.b], "accuracy": p.accuracy}))
    for c in curves:
        if c.code in ("chance-level", "overfitting", "val-plateau"):
            out.append(Diagnosis(c.code, c.message, dict(c.data)))
    plain = subs[PLAIN]
    main = subs[primary]
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
                                  "penalty": s.penalty, "regularizers": [list(r) for r in regs.get(s.name, ())]}))
    if data.leaked_val:
        out.append(Diagnosis("leakage", f"{len(data.leaked_val)} of {data.val_images} validation images ({data.leaked_share:.1%}) "
                             f"copy a training image (e.g. {data.leaked_val[0]}); they add "
                             f"{main.accuracy.term('leakage'):+.4f} to the validation accuracy",
                             {"count": len(data.leaked_val), "share": data.leaked_share}))
    if diff is not None and n_clean:
        se = math.sqrt(max(diff.val_accuracy * (1 - diff.val_accuracy), 0.01) / n_clean)
        if diff.accuracy > max(0.02, 2 * se):
            out.append(Diagnosis("easier-val", f"validation is easier than training: a held-out probe scores "
                                 f"{diff.val_accuracy:.3f} on validation vs {diff.train_accuracy:.3f} on training images",
                                 {"difficulty": diff.accuracy}))
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
                                 f"{lag[0].mean_shift:.2f} std, variance ratio {lag[0].variance_ratio:.3g}){kept}",
                                 {"layers": [b.name for b in lag]}))
    return out


def _fmt_cause(d: Decomposition, cause: str) -> str:
    if cause == "data":
        sub = d.dominant_data_term
        v = d.term(sub)
        # Orient the words by the sign of the term (for the loss, lower is better).
        better = v > 0 if d.higher_is_better else v < 0
        return f"{CAUSE_WORDS['data']}, mostly {DATA_WORDS[sub][0 if better else 1]} ({v:+.4f})"
    return CAUSE_WORDS[cause]


def _summary(s: Subject, diagnoses: list[Diagnosis]) -> tuple[str, tuple[str, ...]]:
    d = s.accuracy
    causes = d.causes()
    dom = d.dominant
    where = "above" if d.gap > 0 else "below" if d.gap < 0 else "level with"
    sentence = (f"{s.name}: validation accuracy is {where} training by {abs(d.gap):.4f} as reported; the largest share, "
                f"{causes[dom]:+.4f}, is {_fmt_cause(d, dom)}.")
    # Causes in their own right; chance-level only when training is at chance too (else the mode terms explain it).
    named = [dg for dg in diagnoses if dg.code in ("over-regularization", "not-separable")
             or (dg.code == "chance-level" and "training" in dg.data.get("curves", ()))]
    if named:
        sentence += " Also: " + "; ".join(dg.message for dg in named) + "."
    advice: list[str] = []
    big = [c for c in causes if abs(causes[c]) >= 0.5 * abs(causes[dom]) and abs(causes[c]) >= 0.01]
    for c in [dom, *big]:
        key = d.dominant_data_term if c == "data" else c
        if key in ADVICE and ADVICE[key] not in advice:
            advice.append(ADVICE[key])
    extra = {"over-regularization": "Lower the regularization (dropout rate, L2 factor): the model does not fit its own "
                                    "training set, so validation cannot fall below it.",
             "not-separable": "Fix the labels of classes the images cannot tell apart, or merge those classes.",
             "chance-level": "Nothing is learned: check labels, the input pipeline and the learning rate.",
             "input-scale": "Scale inputs to [0, 1] (keras.layers.Rescaling(1/255) as the model's first layer) and retrain.",
             "batchnorm-lag": ADVICE["batchnorm"],
             "overfitting": "Stop at the validation loss minimum (EarlyStopping(restore_best_weights=True)).",
             "leakage": ADVICE["leakage"], "easier-val": ADVICE["difficulty"]}
    for dg in diagnoses:
        a = extra.get(dg.code)
        if a and a not in advice:
            advice.append(a)
    return sentence, tuple(advice)
