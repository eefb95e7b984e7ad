"""Small Keras probes trained on the cached embeddings, with every epoch measured in every mode.

Two heads, fixed seeds, a few epochs each: ``plain`` (no dropout, no penalty, no BatchNorm: its gap is timing and
data only) and ``regularized`` (dropout, L2 and BatchNorm, optionally input noise: the usual suspects). After each
epoch :class:`EpochRecorder` stores what Keras reported (the running average over the epoch's batches) and what the
weights at the epoch's end give: the training set in training mode, with each layer group switched off in turn,
in inference mode, and the validation set in inference mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .modes import GROUPS, OutputKind, Pass, evaluate, mode_passes, penalty

PLAIN, REGULARIZED = "plain-probe", "regularized-probe"


@dataclass(frozen=True)
class ProbeConfig:
    """The regularized head's knobs (the plain head ignores them) and the training schedule."""

    hidden: int = 128
    dropout: float = 0.5
    l2: float = 1e-3
    batchnorm: bool = True
    noise: float = 0.0
    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of one subject; accuracies and losses (``*_loss`` exclude the penalty, ``penalty`` is separate).

    ``reported_*`` is what Keras printed (running average over the epoch, training mode, loss incl. penalty);
    ``modes`` holds the training set at the epoch's end with the first k groups of :data:`GROUPS` switched to
    inference mode (``training``: none switched, ``other``: all, i.e. inference mode).
    """

    epoch: int
    reported_accuracy: float
    reported_loss: float
    penalty: float
    modes: tuple[tuple[str, float, float], ...]  # (step, accuracy, data loss)
    val_accuracy: float
    val_loss: float
    val_clean_accuracy: float | None = None  # validation without copies of training images (None: all are copies)
    val_clean_loss: float | None = None

    def mode(self, step: str) -> tuple[float, float]:
        for name, acc, loss in self.modes:
            if name == step:
                return acc, loss
        raise KeyError(step)

    @property
    def train_inference(self) -> tuple[float, float]:
        return self.mode(GROUPS[-1])

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "reported_accuracy": self.reported_accuracy, "reported_loss": self.reported_loss,
                "penalty": self.penalty, "val_accuracy": self.val_accuracy, "val_loss": self.val_loss,
                "val_clean_accuracy": self.val_clean_accuracy, "val_clean_loss": self.val_clean_loss,
                "train_modes": {name: {"accuracy": a, "loss": lo} for name, a, lo in self.modes}}


@dataclass(frozen=True)
class ProbeRun:
    """A trained probe: its per-epoch records and the final passes (per-image values for the data term)."""

    name: str
    epochs: tuple[EpochRecord, ...]
    final_modes: tuple[tuple[str, Pass], ...]
    final_val: Pass
    model: Any  # the Keras model, for callers that want to look further


def build_head(kind: str, dim: int, classes: int, cfg: ProbeConfig) -> Any:
    import keras
    from keras import layers

    inputs = keras.Input((dim,))
    x = inputs
    if kind == PLAIN:
        x = layers.Dense(cfg.hidden, activation="relu")(x)
        outputs = layers.Dense(classes, activation="softmax")(x)
    else:
        reg = keras.regularizers.L2(cfg.l2) if cfg.l2 > 0 else None
        if cfg.noise > 0:
            x = layers.GaussianNoise(cfg.noise)(x)
        x = layers.Dense(cfg.hidden, activation="relu", kernel_regularizer=reg)(x)
        if cfg.batchnorm:
            x = layers.BatchNormalization()(x)  # Keras' default momentum 0.99, as most users leave it
        if cfg.dropout > 0:
            x = layers.Dropout(cfg.dropout)(x)
        outputs = layers.Dense(classes, activation="softmax", kernel_regularizer=reg)(x)
    model = keras.Model(inputs, outputs, name=kind.replace("-", "_"))
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _recorder(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, cfg: ProbeConfig, out: list[EpochRecord],
              last: dict[str, Any], clean: np.ndarray) -> Any:
    import keras

    kind = OutputKind()

    class EpochRecorder(keras.callbacks.Callback):
        """Measures the weights at each epoch's end next to what Keras reported for the epoch."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            passes = mode_passes(self.model, x, y, kind, batch_size=cfg.batch_size, seed=cfg.seed + epoch)
            val = evaluate(self.model, xv, yv, kind)
            last["passes"], last["val"] = passes, val  # per-image values of the final epoch, for the data term
            any_clean = bool(clean.any())
            out.append(EpochRecord(
                epoch=epoch + 1,
                reported_accuracy=float(logs["accuracy"]), reported_loss=float(logs["loss"]),
                penalty=penalty(self.model),
                modes=tuple((name, p.accuracy, p.loss) for name, p in passes),
                val_accuracy=val.accuracy, val_loss=val.loss,
                val_clean_accuracy=float(val.correct[clean].mean()) if any_clean else None,
                val_clean_loss=float(val.losses[clean].mean()) if any_clean else None,
            ))

    return EpochRecorder()


def train_probe(kind: str, x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, classes: int,
                cfg: ProbeConfig = ProbeConfig(), clean: np.ndarray | None = None) -> ProbeRun:
    """Train one head on standardised features with fixed seeds, recording every epoch.

    ``clean`` masks the validation rows that copy no training image (default: all), for per-epoch data terms.
    """
    import keras

    keras.utils.set_random_seed(cfg.seed)
    model = build_head(kind, x.shape[1], classes, cfg)
    records: list[EpochRecord] = []
    last: dict[str, Any] = {}
    model.fit(x, y, epochs=cfg.epochs, batch_size=cfg.batch_size, shuffle=True, verbose=0,
              callbacks=[_recorder(x, y, xv, yv, cfg, records, last, np.ones(len(yv), bool) if clean is None else clean)])
    return ProbeRun(kind, tuple(records), tuple(last["passes"]), last["val"], model)
