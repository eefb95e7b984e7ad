"""Every setting of a run, declared once: :class:`Options` (like black's ``Mode``).

Each field carries a :class:`Setting` in its metadata: help text, CLI flag, ``[tool.splitaudit]`` key, the
commands it applies to and how a flag's string becomes a value. ``cli.py`` generates its flags and ``config.py``
its keys from these declarations; :meth:`Options.__post_init__` validates and normalises every value, so the API,
the CLI and the config file share one set of checks and one error shape. :class:`Invocation` declares the few
command-line settings that are not pipeline options (inputs, output format) the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from .errors import invalid_parameter
from .features.embeddings.backbones import BACKBONES, DEFAULT_BACKBONE, NONE
from .features.engine import ENGINES, RAY_ADDRESS
from .features.extract import DEFAULT_MAX_PIXELS
from .report.model import Severity

if TYPE_CHECKING:
    from .report.baseline import Baseline

CHECK, FIX, EXPLAIN = "check", "fix", "explain"
COMMANDS = (CHECK, FIX, EXPLAIN)
#: ``fix`` audits too: these settings shape the audit it plans from.
_AUDIT = (CHECK, FIX)

#: How far (max over classes of the absolute change in share) a move may shift the home split's class proportions.
DEFAULT_TOLERANCE = 0.02
PREFER = ("move", "drop")
#: ``explain --input-scale``: the pixel range fed to the user's model.
INPUT_SCALES = ("auto", "0-1", "-1-1", "0-255")
#: ``explain --metric``: which gap the headline decomposes (both are always computed and reported).
METRICS = ("both", "accuracy", "loss")
#: ``--html-originals``: how the HTML report's enlarged view gets each pair's original images.
HTML_ORIGINALS = ("embed", "link", "none")
#: Defaults of the HTML report's embedded originals: total MiB of the file they may take, and pixels per image
#: beyond which an original is downscaled before it is embedded (a 24-megapixel photo would be ~8 MB on its own).
DEFAULT_HTML_EMBED_MIB = 16.0
DEFAULT_HTML_MAX_PIXELS = 4_000_000
_HTML = (CHECK, EXPLAIN)  # explain --html writes the same report


@dataclass(frozen=True)
class Setting:
    """How one field is exposed. ``flag``/``key`` are ``None`` where it has none; a name starting with ``no-``
    inverts a boolean (``--no-cache`` sets ``cache=False``; ``no-cache = true`` likewise)."""

    help: str
    commands: tuple[str, ...]
    flag: str | None
    key: str | None
    types: tuple[type, ...]  # accepted TOML value types
    desc: str  # what a config value must be, for the error message
    parse: Callable[[str], Any] | None = None  # flag string -> value (None: a boolean switch)
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    path: bool = False  # config values are resolved relative to the config file
    keyed: bool = False  # changes computed (cached) results: part of Options.cache_key()


def csv_names(value: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``; empty names are kept so that validation can refuse them."""
    return tuple(v.strip() for v in value.split(","))


def _setting(default: Any, help: str, *, commands: tuple[str, ...], types: tuple[type, ...], desc: str,
             flag: str | None = "", key: str | None = "", **kw: Any) -> Any:
    """A dataclass field with its :class:`Setting`; ``""`` derives the flag/key from the field name later."""
    meta = {"help": help, "commands": commands, "types": types, "desc": desc, "flag": flag, "key": key, **kw}
    return field(default=default, metadata={"setting": meta})


def _finish(cls: type) -> type:
    """Turn each field's raw metadata into a :class:`Setting`, deriving default flag and key names."""
    specs: dict[str, Setting] = {}
    for f in fields(cls):
        meta = dict(f.metadata["setting"])
        dashed = f.name.replace("_", "-")
        meta["flag"] = f"--{dashed}" if meta["flag"] == "" else meta["flag"]
        meta["key"] = dashed if meta["key"] == "" else meta["key"]
        specs[f.name] = Setting(**meta)
    cls.SETTINGS = specs  # type: ignore[attr-defined]
    return cls


def settings(cls: type, command: str | None = None) -> Iterator[tuple[Field[Any], Setting]]:
    """``(field, setting)`` of ``cls`` (``Options`` or ``Invocation``), only those of ``command`` if given."""
    for f in fields(cls):
        spec: Setting = cls.SETTINGS[f.name]  # type: ignore[attr-defined]
        if command is None or command in spec.commands:
            yield f, spec


def _int(name: str, value: Any, lo: int, hi: int | None = None, *, none: bool = False) -> int | None:
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        allowed = f"an int in [{lo}, {hi}]" if hi is not None else f"an int >= {lo}"
        raise invalid_parameter(name, f"None or {allowed}" if none else allowed, value)
    return value


def _float(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise invalid_parameter(name, f"a float in [{lo:g}, {hi:g}]", value)
    return float(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise invalid_parameter(name, "True or False", value)
    return value


def _path(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise invalid_parameter(name, "None or a path", value)
    return os.fspath(value)


def _names(name: str, value: Any, known: Iterable[str], *, empty: bool = False) -> tuple[str, ...] | None:
    """Check names as a tuple; a string is comma-separated. Empty names are refused, and so is an empty list
    unless ``empty`` (ignoring nothing is no ignore: ``None``)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = csv_names(value)
    if not isinstance(value, Iterable):
        raise invalid_parameter(name, "None or a list of check names", value)
    names = tuple(value)
    if not names and empty:
        return None
    if not names:
        raise invalid_parameter(name, "None or a non-empty list of check names", list(names))
    allowed = sorted(known)
    for n in names:
        if n not in allowed and n != "ALL":
            raise invalid_parameter(name, allowed, n)
    return names


@_finish
@dataclass(frozen=True)
class Options:
    """The settings of one run, validated on construction. Build with keywords, derive with :meth:`replace`.

    ``audit``, ``plan_fix`` and ``explain`` take one (``options=``) or its fields as keyword arguments; each field's
    :class:`Setting` says which commands use it. See ``docs/options.md``.
    """

    group_by: str | None = _setting(
        None, "regex on relative paths; its first group names the image's group", commands=_AUDIT,
        types=(str,), desc="a regular expression", parse=str, metavar="REGEX")
    validation_split: float | None = _setting(
        None, "audit one folder as Keras splits it: image_dataset_from_directory(folder, validation_split=F, "
        "seed=--seed) subsets 'training' and 'validation' become splits train and val", commands=_AUDIT,
        types=(float,), desc="a number between 0 and 1 (exclusive)", parse=float, metavar="F")
    git_tracked: bool = _setting(
        False, "audit only the files git tracks (committed or staged), so untracked scratch files never block a commit",
        commands=_AUDIT, types=(bool,), desc="true or false")
    select: tuple[str, ...] | None = _setting(
        None, "comma-separated checks to run (default: all)", commands=(CHECK,),
        types=(list,), desc="a list of check names", parse=csv_names, metavar="CHECKS")
    ignore: tuple[str, ...] | None = _setting(
        None, "comma-separated checks to skip", commands=(CHECK,),
        types=(list,), desc="a list of check names", parse=csv_names, metavar="CHECKS")
    check_options: Mapping[str, Mapping[str, Any]] | None = _setting(
        None, "{check name: {parameter: value}}, e.g. {'near-duplicates': {'max_phash': 8}}", commands=_AUDIT,
        types=(dict,), desc="a table of check name = table of parameters", flag=None, key="checks")
    fail_on: Severity = _setting(
        Severity.ERROR, "lowest severity that fails", commands=(CHECK,),
        types=(str,), desc="'error', 'warning' or 'info'", parse=str, choices=tuple(s.label for s in Severity))
    max_leak_fraction: float = _setting(
        0.0, "tolerated share of copied images per split", commands=(CHECK,),
        types=(float, int), desc="a number in [0, 1]", parse=float, metavar="F")
    cache: bool = _setting(
        True, "neither read nor write the cache", commands=COMMANDS,
        types=(bool,), desc="true or false", flag="--no-cache", key="no-cache")
    cache_dir: str | None = _setting(
        None, "cache folder (default: $SPLITAUDIT_CACHE_DIR or ~/.cache/splitaudit)", commands=COMMANDS,
        types=(str,), desc="a folder path", parse=str, metavar="DIR", path=True)
    workers: int | None = _setting(
        None, "decoding processes, the threads of the copy verifier, and the worker processes of the pixel confirmation and of tiny images' copy verifier (default: one per core)", commands=COMMANDS,
        types=(int,), desc="an integer >= 1", parse=int, metavar="N")
    draft: bool = _setting(
        True, "decode JPEGs at full scale for hashing (slower, same verdicts)", commands=COMMANDS,
        types=(bool,), desc="true or false", flag="--no-draft", keyed=True)
    max_pixels: int = _setting(
        DEFAULT_MAX_PIXELS, "refuse (report as unreadable) images with more pixels than this", commands=COMMANDS,
        types=(int,), desc="an integer >= 1", parse=int, metavar="N", keyed=True)
    backbone: str = _setting(
        DEFAULT_BACKBONE, "CNN for embeddings: efficientnet_lite0 (offline), a keras.applications name "
        "(e.g. mobilenet_v3_small), or none", commands=COMMANDS,
        types=(str,), desc="a backbone name (see splitaudit check --help)", parse=str, metavar="NAME", keyed=True)
    weights: str | None = _setting(
        None, "local weights file for --backbone", commands=COMMANDS,
        types=(str,), desc="a weights file path", parse=str, metavar="PATH", path=True, keyed=True)
    verify: bool = _setting(
        True, "skip the copy verifier (registration of candidate pairs): copies are then found by hashes and "
        "embeddings only", commands=COMMANDS, types=(bool,), desc="true or false", flag="--no-verify", keyed=True)
    keypoints: bool = _setting(
        True, "skip the copy verifier's second opinion of local features (ORB keypoints and RANSAC, photos of 96 px "
        "and more): faster on photos, fewer rotated and cropped copies found", commands=COMMANDS, types=(bool,),
        desc="true or false", flag="--no-keypoints", keyed=True)
    image_size: int | None = _setting(
        None, "network input side (default: 2x the median side, 64 to 128 px)", commands=COMMANDS,
        types=(int,), desc="an integer number of pixels", parse=int, metavar="PX", keyed=True)
    engine: str = _setting(
        "local", "where images are decoded, hashed and embedded: this machine's process pool, or a Ray cluster "
        "(pip install 'splitaudit[ray]'; same report)", commands=COMMANDS,
        types=(str,), desc=f"one of {', '.join(ENGINES)}", parse=str, choices=ENGINES)
    ray_address: str | None = _setting(
        None, "Ray cluster to join with --engine ray (host:port, auto, ray://host:port; default: start a local Ray "
        "runtime)", commands=COMMANDS, types=(str,), desc="a Ray cluster address", parse=str, metavar="ADDR")
    baseline: str | Baseline | None = _setting(
        None, "accept the findings listed in FILE (reported, but not failing)", commands=(CHECK,),
        types=(str,), desc="a path to a baseline file (splitaudit check --write-baseline)", parse=str, metavar="FILE",
        path=True)
    epochs: int = _setting(
        8, "epochs per probe", commands=(EXPLAIN,), types=(int,), desc="an integer >= 1", parse=int, metavar="N")
    batch_size: int = _setting(
        32, "probe and training-mode batch size", commands=(EXPLAIN,),
        types=(int,), desc="an integer >= 1", parse=int, metavar="N")
    input_scale: str = _setting(
        "auto", "pixel range fed to --model", commands=(EXPLAIN,),
        types=(str,), desc=f"one of {', '.join(INPUT_SCALES)}", parse=str, choices=INPUT_SCALES)
    seed: int | None = _setting(
        None, "seed for every random choice: Keras' --validation-split shuffle (required with it), explain's probes, "
        "dropout masks and folds, the copy stage's calibration samples (default 0); stated in the report",
        commands=COMMANDS,
        types=(int,), desc="an integer >= 0", parse=int, metavar="N")
    metric: str = _setting(
        "both", "which gap the headline decomposes", commands=(EXPLAIN,),
        types=(str,), desc=f"one of {', '.join(METRICS)}", parse=str, choices=METRICS)
    probe_dropout: float = _setting(
        0.5, "the regularized probe's dropout rate", commands=(EXPLAIN,),
        types=(float, int), desc="a number in [0, 0.95]", parse=float, metavar="F")
    probe_l2: float = _setting(
        1e-3, "the regularized probe's L2 factor", commands=(EXPLAIN,),
        types=(float, int), desc="a number >= 0", parse=float, metavar="F")
    probe_noise: float = _setting(
        0.0, "the regularized probe's Gaussian input noise, in feature standard deviations", commands=(EXPLAIN,),
        types=(float, int), desc="a number >= 0", parse=float, metavar="F")
    tolerance: float = _setting(
        DEFAULT_TOLERANCE, "largest class-share change a move may cause in the training split", commands=(FIX,),
        types=(float, int), desc="a number in [0, 1]", parse=float, metavar="F")
    prefer: str = _setting(
        "move", "move leaked images to train when proportions allow, or always drop them", commands=(FIX,),
        types=(str,), desc="'move' or 'drop'", parse=str, choices=PREFER)

    html_originals: str = _setting(
        "embed", "HTML report: the originals its enlarged pair view shows, embedded in the file (up to "
        "--html-embed-mib), linked by relative path (for a report written next to the data), or none",
        commands=_HTML, types=(str,), desc=f"one of {', '.join(HTML_ORIGINALS)}", parse=str, choices=HTML_ORIGINALS)
    html_embed_mib: float = _setting(
        DEFAULT_HTML_EMBED_MIB, "HTML report: at most this many MiB of embedded originals (most severe pairs first)",
        commands=_HTML, types=(float, int), desc="a number in [0, 4096]", parse=float, metavar="MIB")
    html_max_pixels: int = _setting(
        DEFAULT_HTML_MAX_PIXELS, "HTML report: an embedded original with more pixels than this is downscaled to it",
        commands=_HTML, types=(int,), desc="an integer >= 1024", parse=int, metavar="N")

    def __post_init__(self) -> None:
        from .report.baseline import Baseline, resolve_baseline
        from .checks import all_checks
        from .scan import compile_group_pattern

        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        known = all_checks()
        if self.group_by is not None and not isinstance(self.group_by, str):
            raise invalid_parameter("group_by", "None or a regular expression", self.group_by)
        compile_group_pattern(self.group_by)
        _bool("git_tracked", self.git_tracked)
        put("select", _names("select", self.select, known))
        put("ignore", _names("ignore", self.ignore, known, empty=True))
        put("check_options", self._check_options(known))
        put("fail_on", Severity.parse(self.fail_on, name="fail_on"))
        put("max_leak_fraction", _float("max_leak_fraction", self.max_leak_fraction, 0, 1))
        _bool("cache", self.cache)
        put("cache_dir", _path("cache_dir", self.cache_dir))
        _int("workers", self.workers, 1, none=True)
        _bool("draft", self.draft)
        _int("max_pixels", self.max_pixels, 1)
        _bool("verify", self.verify)
        _bool("keypoints", self.keypoints)
        if self.backbone not in BACKBONES:
            raise invalid_parameter("backbone", list(BACKBONES), self.backbone)
        put("weights", _path("weights", self.weights))
        if self.backbone == NONE and self.weights is not None:
            raise invalid_parameter("weights", "None when backbone is 'none'", self.weights)
        if self.weights is not None and self.weights != "imagenet" and not os.path.isfile(self.weights):
            raise invalid_parameter("weights", "'imagenet' or the path of an existing weights file", self.weights)
        _int("image_size", self.image_size, 32, 1024, none=True)
        if self.engine not in ENGINES:
            raise invalid_parameter("engine", ENGINES, self.engine)
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address):
            raise invalid_parameter("ray_address", RAY_ADDRESS, self.ray_address)  # unused by engine 'local'
        if self.baseline is not None and not isinstance(self.baseline, (str, os.PathLike, Baseline)):
            put("baseline", resolve_baseline(self.baseline))  # finding ids: checked now; files are read by the run
        elif isinstance(self.baseline, os.PathLike):
            put("baseline", os.fspath(self.baseline))
        _int("epochs", self.epochs, 1, 1000)
        _int("batch_size", self.batch_size, 1, 1 << 16)
        if self.input_scale not in INPUT_SCALES:
            raise invalid_parameter("input_scale", INPUT_SCALES, self.input_scale)
        _int("seed", self.seed, 0, 2**31 - 1, none=True)
        if self.validation_split is not None:
            if isinstance(self.validation_split, bool) or not isinstance(self.validation_split, (int, float)) \
                    or not 0 < self.validation_split < 1:
                raise invalid_parameter("validation_split", "None or a float in (0, 1)", self.validation_split)
            put("validation_split", float(self.validation_split))
            if self.seed is None:
                # Keras refuses validation_split without a seed too: each subset would be drawn from another shuffle.
                raise invalid_parameter("seed", "an int when validation_split is set (the seed given to Keras' "
                                        "image_dataset_from_directory)", self.seed)
        if self.metric not in METRICS:
            raise invalid_parameter("metric", METRICS, self.metric)
        put("probe_dropout", _float("probe_dropout", self.probe_dropout, 0.0, 0.95))
        put("probe_l2", _float("probe_l2", self.probe_l2, 0.0, 1e6))
        put("probe_noise", _float("probe_noise", self.probe_noise, 0.0, 100.0))
        put("tolerance", _float("tolerance", self.tolerance, 0, 1))
        if self.prefer not in PREFER:
            raise invalid_parameter("prefer", PREFER, self.prefer)
        if self.html_originals not in HTML_ORIGINALS:
            raise invalid_parameter("html_originals", HTML_ORIGINALS, self.html_originals)
        put("html_embed_mib", _float("html_embed_mib", self.html_embed_mib, 0, 4096))
        _int("html_max_pixels", self.html_max_pixels, 1024)

    def _check_options(self, known: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
        """A plain copy, every check name known and every parameter valid (names as the user spelled them)."""
        if self.check_options is None:
            return None
        if not isinstance(self.check_options, Mapping):
            raise invalid_parameter("check_options", "None or a mapping {check name: {parameter: value}}", self.check_options)
        out = {}
        for name, params in self.check_options.items():
            if name not in known:
                raise invalid_parameter("check_options", f"keyed by check names {sorted(known)}", name)
            if not isinstance(params, Mapping):
                raise invalid_parameter("check_options", "a mapping of check name to {parameter: value}", params)
            known[name].validate(params)
            out[name] = dict(params)
        return out

    def selected(self) -> list[tuple[Any, dict[str, Any]]]:
        """The checks to run, in registry order, each with its validated parameters (defaults filled in)."""
        from .checks import resolve_selection

        checks = resolve_selection(list(self.select) if self.select else None, list(self.ignore) if self.ignore else None)
        given = self.check_options or {}
        return [(c, c.validate(given.get(c.name, {}))) for c in checks]

    def replace(self, **changes: Any) -> Options:
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)

    def cache_key(self) -> str:
        """A stable digest of the settings that change computed (cached) results: decoding, hashing and
        embedding settings; a local weights file counts by content. Cosmetic settings (workers, cache folder,
        verdict policy) leave it unchanged."""
        from .features.embeddings.backbones import _file_digest

        values: dict[str, Any] = {}
        for f, spec in settings(Options):
            if spec.keyed:
                values[f.name] = getattr(self, f.name)
        if self.weights not in (None, "imagenet"):
            values["weights"] = "sha256:" + _file_digest(self.weights)  # as BackboneSpec.identity counts it
        text = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def only(self, command: str) -> Options:
        """This with every setting that does not apply to ``command`` back at its default."""
        return replace(self, **{f.name: f.default for f, spec in settings(Options) if command not in spec.commands
                                and getattr(self, f.name) != f.default})


def build_options(command: str, function: str, options: Options | None, given: Mapping[str, Any]) -> Options:
    """``options`` (or the defaults) with the keyword settings ``given`` to ``function`` applied.

    A name that is no setting is a ``TypeError``, as Python raises for an unknown keyword; a setting of another
    command (``plan_fix(select=...)``) is a parameter error naming it.
    """
    if options is not None and not isinstance(options, Options):
        raise invalid_parameter("options", "None or a splitaudit.options.Options", options)
    specs = Options.SETTINGS  # type: ignore[attr-defined]
    for name, value in given.items():
        if name not in specs:
            raise TypeError(f"{function}() got an unexpected keyword argument {name!r}")
        if command not in specs[name].commands:
            raise invalid_parameter(name, f"not set for {function}() (a setting of {' and '.join(specs[name].commands)})", value)
    return replace(options, **given) if options is not None else Options(**given)


@_finish
@dataclass(frozen=True)
class Invocation:
    """Command-line settings that are not pipeline options: what to read and where the report goes. Their flags
    are written by ``cli.py`` where ``flag`` is ``None`` (positional splits, per-command output formats)."""

    splits: tuple[tuple[str | None, str], ...] | None = _setting(
        None, "split folders, training split first", commands=_AUDIT,
        types=(list, dict), desc="a list of folders or a table name = folder", flag=None)
    manifest: str | None = _setting(
        None, "CSV with path,label,split[,group] columns instead of folders", commands=_AUDIT,
        types=(str,), desc="a path to a CSV manifest", parse=str, metavar="CSV", path=True)
    format: str | None = _setting(
        None, "output format", commands=(CHECK,), types=(str,), desc="an output format name", flag=None)
    output: str | None = _setting(
        None, "write the report to FILE instead of standard output", commands=(CHECK,),
        types=(str,), desc="a file path", flag=None, path=True)
    exit_zero: bool = _setting(
        False, "exit 0 even when findings fail the verdict", commands=(CHECK,), types=(bool,), desc="true or false")



def markdown_table() -> str:
    """Every setting as a Markdown table (docs/options.md holds its output; a test keeps the two equal)."""
    rows = ["| field | flag | `[tool.splitaudit]` key | commands | default | flag help |", "|---|---|---|---|---|---|"]
    for cls in (Options, Invocation):
        for f, spec in settings(cls):
            default = f.default.label if isinstance(f.default, Severity) else f.default
            rows.append(f"| `{cls.__name__}.{f.name}` | {f'`{spec.flag}`' if spec.flag else '-'} | `{spec.key}` | "
                        f"{', '.join(spec.commands)} | `{default!r}` | {spec.help}{' (keyed)' if spec.keyed else ''} |")
    return "\n".join(rows) + "\n"
