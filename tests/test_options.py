"""Options: one declaration per setting. Validation messages, cache_key, and the CLI flags and config keys that are
generated from the fields (so they agree by construction; these tests keep it that way)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import splitaudit
from splitaudit.cli import _resolve, build_parser, main
from splitaudit.config import Config, load_config
from splitaudit.errors import InvalidParameterError
from splitaudit.options import COMMANDS, Invocation, Options, settings
from splitaudit.report.model import Severity
from splitaudit.run import open_run

from conftest import Planted

ROOT = Path(__file__).resolve().parents[1]


_SAME = object()  # the error shows the value as given


@pytest.mark.parametrize("name, value, allowed, got", [
    ("select", [], "None or a non-empty list of check names", _SAME),
    ("select", "", "one of {", ""),
    ("select", ["near-duplicates", ""], "one of {", ""),
    ("select", ["no-such-check"], "one of {", "no-such-check"),
    ("ignore", [""], "one of {", ""),
    ("fail_on", "fatal", "one of {'error', 'info', 'warning'}", _SAME),
    ("max_leak_fraction", 2, "a float in [0, 1]", _SAME),
    ("max_leak_fraction", True, "a float in [0, 1]", _SAME),
    ("workers", 0, "None or an int >= 1", _SAME),
    ("workers", 2.0, "None or an int >= 1", _SAME),
    ("cache", "yes", "True or False", _SAME),
    ("draft", 1, "True or False", _SAME),
    ("max_pixels", 0, "an int >= 1", _SAME),
    ("backbone", "resnet9000", "one of {", _SAME),
    ("weights", "/no/such/weights.h5", "'imagenet' or the path of an existing weights file", _SAME),
    ("image_size", 16, "None or an int in [32, 1024]", _SAME),
    ("group_by", "(unclosed", "a valid regular expression", _SAME),
    ("check_options", {"no-such": {}}, "keyed by check names", "no-such"),
    ("baseline", ["zz"], "a baseline file path or finding ids", "zz"),
    ("epochs", 0, "an int in [1, 1000]", _SAME),
    ("batch_size", 0, "an int in [1, 65536]", _SAME),
    ("input_scale", "0-100", "one of {", _SAME),
    ("seed", -1, "None or an int in [0, 2147483647]", _SAME),
    ("validation_split", 1.0, "None or a float in (0, 1)", _SAME),
    ("probe_dropout", 1.0, "a float in [0, 0.95]", _SAME),
    ("probe_l2", -1.0, "a float in [0, 1e+06]", _SAME),
    ("probe_noise", "x", "a float in [0, 100]", _SAME),
    ("tolerance", 2, "a float in [0, 1]", _SAME),
    ("prefer", "shuffle", "one of {'drop', 'move'}", _SAME),
    ("engine", "spark", "one of {'local', 'ray'}", _SAME),
    ("ray_address", "", "None or a Ray address", _SAME),
    ("html_originals", "inline", "one of {'embed', 'link', 'none'}", _SAME),
    ("html_embed_mib", -1, "a float in [0, 4096]", _SAME),
    ("html_max_pixels", 10, "an int >= 1024", _SAME),
])
def test_invalid_values_name_the_parameter_the_allowed_values_and_the_input(name: str, value: Any, allowed: str, got: Any) -> None:
    with pytest.raises(InvalidParameterError) as err:
        Options(**{name: value})
    message = str(err.value)
    assert message.startswith(f"The {name!r} parameter must be {allowed}"), message
    assert message.endswith(f"Got {value if got is _SAME else got!r} instead."), message


def test_input_scales_are_the_ones_explain_knows() -> None:
    from splitaudit.explain.model_diag import SCALES
    from splitaudit.options import INPUT_SCALES

    assert INPUT_SCALES == ("auto", *SCALES)


def test_weights_need_a_backbone_and_check_parameters_are_checked(tmp_path: Path) -> None:
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"weights")
    with pytest.raises(InvalidParameterError, match="The 'weights' parameter must be None when backbone is 'none'"):
        Options(backbone="none", weights=weights)
    with pytest.raises(InvalidParameterError, match="'max_phash' parameter of check 'near-duplicates' must be of type int. Got '8'"):
        Options(check_options={"near-duplicates": {"max-phash": "8"}})


def test_values_are_normalised_and_the_object_is_frozen(tmp_path: Path) -> None:
    o = Options(select=["exact-duplicates", "near-duplicates"], ignore=[], fail_on="warning", max_leak_fraction=0,
                cache_dir=tmp_path, baseline=["0123456789abcdef"])
    assert o.select == ("exact-duplicates", "near-duplicates") and o.ignore is None
    assert o.fail_on is Severity.WARNING and isinstance(o.max_leak_fraction, float)
    assert o.cache_dir == str(tmp_path) and o.baseline.ids == frozenset({"0123456789abcdef"})
    assert Options(select="exact-duplicates, near-duplicates").select == o.select
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.workers = 2  # type: ignore[misc]
    assert o.replace(workers=2).workers == 2 and o.workers is None
    with pytest.raises(InvalidParameterError, match="'workers'"):
        o.replace(workers=-1)  # a derived object is validated too
    assert [c.name for c, _ in o.selected()] == ["exact-duplicates", "near-duplicates"]


# A valid non-default value for every field: a new field must be added here, deciding whether it is keyed.
ALTERNATES: dict[str, Any] = {
    "group_by": r"^([^_]+)_", "git_tracked": True, "select": ("exact-duplicates", "near-duplicates"), "ignore": ("class-balance",),
    "check_options": {"near-duplicates": {"max-phash": 8}}, "fail_on": Severity.WARNING, "max_leak_fraction": 0.25,
    "cache": False, "cache_dir": "/tmp/splitaudit-options-test", "workers": 3, "draft": False, "max_pixels": 1000,
    "backbone": "mobilenet_v3_small", "weights": None, "image_size": 96, "baseline": "/tmp/bl.json", "epochs": 3,
    "batch_size": 16, "input_scale": "0-1", "seed": 5, "metric": "loss", "probe_dropout": 0.25, "probe_l2": 0.5, "probe_noise": 0.125,
    "tolerance": 0.5, "prefer": "drop", "verify": False, "keypoints": False, "engine": "ray", "ray_address": "127.0.0.1:6379",
    "validation_split": 0.2,
    "html_originals": "link", "html_embed_mib": 2.5, "html_max_pixels": 65536,
}
KEYED = {"draft", "max_pixels", "backbone", "weights", "image_size", "verify", "keypoints"}


def test_cache_key_changes_with_result_settings_only(tmp_path: Path) -> None:
    assert set(ALTERNATES) == {f.name for f in dataclasses.fields(Options)}
    assert {f.name for f, s in settings(Options) if s.keyed} == KEYED
    base = Options()
    for name, value in ALTERNATES.items():
        if name == "weights":
            continue
        extra = {"seed": 5} if name == "validation_split" else {}  # Keras' split needs its seed
        changed = base.replace(**{name: value}, **extra).cache_key() != base.cache_key()
        assert changed == (name in KEYED), name
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    a.write_bytes(b"first")
    b.write_bytes(b"second")
    key_a = Options(weights=a).cache_key()
    assert key_a not in (Options(weights=b).cache_key(), base.cache_key())
    b.write_bytes(b"first")
    assert Options(weights=b).cache_key() == key_a  # a weights file counts by content, not by path


def test_cache_key_is_stable_across_processes() -> None:
    code = "from splitaudit.options import Options; print(Options(max_pixels=1000, image_size=64).cache_key())"
    keys = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT), "PATH": ""}).stdout.strip() for seed in ("1", "2")}
    assert keys == {Options(max_pixels=1000, image_size=64).cache_key()}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_setting_has_a_flag_and_a_config_key_in_every_command_it_applies_to() -> None:
    parsers = _subparsers()
    for cls in (Options, Invocation):
        for f, spec in settings(cls):
            assert spec.commands and set(spec.commands) <= set(COMMANDS), f.name
            assert spec.key is not None, f.name
            if spec.flag is None:  # declared exceptions: sub-tables, positional inputs, per-command output formats
                assert f.name in ("check_options", "splits", "format", "output"), f.name
                continue
            for command in COMMANDS:
                flags = {s: a.dest for a in parsers[command]._actions for s in a.option_strings}
                assert (spec.flag in flags) == (command in spec.commands), (f.name, command)
                if command in spec.commands:
                    assert flags[spec.flag] == f.name


def test_one_meaning_per_flag_name() -> None:
    seen: dict[str, tuple[str, str | None]] = {}
    for command, parser in _subparsers().items():
        for a in parser._actions:
            for flag in a.option_strings:
                meaning = (a.dest, a.help if a.dest in Options.SETTINGS else None)
                assert seen.setdefault(flag, meaning) == meaning, (flag, command)


def _argv(spec: Any, value: Any) -> list[str]:
    if spec.parse is None:
        return [spec.flag]
    text = value.label if isinstance(value, Severity) else ",".join(value) if isinstance(value, tuple) else str(value)
    return [spec.flag, text]


def _toml(spec: Any, value: Any) -> str:
    if spec.key.startswith("no-"):
        value = not value
    if isinstance(value, Severity):
        value = value.label
    if isinstance(value, dict):
        return f"{spec.key} = " + json.dumps(value).replace(":", " =")
    return f"{spec.key} = {json.dumps(list(value) if isinstance(value, tuple) else value)}"


def test_flag_and_config_key_set_the_same_field_and_the_flag_wins(tmp_path: Path) -> None:
    weights = tmp_path / "weights.h5"
    weights.write_bytes(b"w")
    values = {**ALTERNATES, "weights": str(weights)}
    positional = {"check": ["a"], "fix": ["a"], "explain": ["a", "b"]}
    parser = build_parser()
    for command in COMMANDS:
        for f, spec in settings(Options, command):
            value = values[f.name]
            pyproject = tmp_path / f"{command}-{f.name}.toml"
            seed = f.name == "validation_split"  # Keras' split needs its seed
            pyproject.write_text("[tool.splitaudit]\n" + _toml(spec, value) + "\n" + ("seed = 5\n" if seed else ""))
            config = load_config(pyproject)
            from_config = Options(**config.settings(Options, command))
            assert getattr(from_config, f.name) == value, (command, f.name)
            if spec.flag is None:
                continue
            args = parser.parse_args([command, *positional[command], *_argv(spec, value), *(["--seed", "5"] if seed else [])])
            assert getattr(Options(**_resolve(Options, command, args, Config())), f.name) == value, (command, f.name)
    # Precedence: flag over config over default.
    config = Config({"workers": 2, "epochs": 4})
    assert Options(**_resolve(Options, "check", parser.parse_args(["check", "a", "--workers", "3"]), config)).workers == 3
    assert Options(**_resolve(Options, "check", parser.parse_args(["check", "a"]), config)).workers == 2
    assert Options(**_resolve(Options, "check", parser.parse_args(["check", "a"]), Config())).workers is None
    assert Options(**_resolve(Options, "check", parser.parse_args(["check", "a"]), config)).epochs == 8  # not check's


def test_config_paths_are_relative_to_the_config_file_and_unknown_keys_are_named(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    pyproject = tmp_path / "sub" / "pyproject.toml"
    pyproject.write_text('[tool.splitaudit]\ncache-dir = "cache"\nmanifest = "data.csv"\nsplits = ["train"]\n')
    config = load_config(pyproject)
    assert config.settings(Options, "explain") == {"cache_dir": str(tmp_path / "sub" / "cache")}
    assert config.settings(Invocation, "fix") == {"manifest": str(tmp_path / "sub" / "data.csv"),
                                                   "splits": ((None, str(tmp_path / "sub" / "train")),)}
    pyproject.write_text('[tool.splitaudit]\nepochz = 3\n')
    with pytest.raises(splitaudit.ConfigError, match="unknown key 'epochz' in \\[tool.splitaudit\\]; known keys are .*'epochs'"):
        load_config(pyproject)


def test_empty_select_is_a_usage_error(planted: Planted, capsys: pytest.CaptureFixture[str]) -> None:
    for value in ("", ",", "exact-duplicates,"):
        assert main(["check", *map(str, planted.splits), "--backbone", "none", "--select", value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "The 'select' parameter must be one of {" in err and "Got '' instead." in err


def test_keyword_settings_build_or_replace_the_options(planted: Planted) -> None:
    only = ["exact-duplicates"]
    a = splitaudit.audit(*planted.splits, backbone="none", select=only)
    b = splitaudit.audit(*planted.splits, options=Options(backbone="none", select=["near-duplicates"]), select=only)
    assert a.to_json() == b.to_json() and set(json.loads(a.to_json())["checks"]) == set(only)
    with pytest.raises(InvalidParameterError, match="The 'epochs' parameter must be not set for audit\\(\\)"):
        splitaudit.audit(*planted.splits, epochs=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'backbon'"):
        splitaudit.audit(*planted.splits, backbon="none")
    with pytest.raises(InvalidParameterError, match="'select' parameter must be not set for explain"):
        splitaudit.explain(*planted.splits[:2], select=only)


def test_open_run_builds_the_context_from_the_options_and_closes_the_cache(planted: Planted) -> None:
    with open_run(planted.splits, options=Options(backbone="none")) as ctx:
        assert ctx.backbone is None and ctx.features.misses > 0
        store = ctx.cache
    assert store is not None and store._conn is None  # closed on exit
    with open_run(planted.splits, options=Options(image_size=64)) as ctx:
        assert ctx.features.misses == 0 and ctx.features.hits > 0  # the cache of the first run
        assert (ctx.backbone.name, ctx.backbone.image_size) == ("efficientnet_lite0", 64)
    with open_run(planted.splits, options=Options(cache=False)) as ctx:
        # The automatic size needs the features: 64-px tiles are embedded at 2x.
        assert ctx.cache is None and ctx.backbone.image_size == 128 and ctx.features.misses > 0


def test_explain_reads_tool_splitaudit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Settings that fail validation prove the key was read, before anything is decoded or trained."""
    (tmp_path / "pyproject.toml").write_text('[tool.splitaudit]\nepochs = 0\n')
    assert main(["explain", str(tmp_path / "train"), str(tmp_path / "val"), "--config", str(tmp_path / "pyproject.toml")]) == 2
    err = capsys.readouterr().err
    assert err == "splitaudit: error: The 'epochs' parameter must be an int in [1, 1000]. Got 0 instead.\n"
    # The flag wins over the config: with a valid --epochs the (missing) folders are the next problem.
    assert main(["explain", str(tmp_path / "train"), str(tmp_path / "val"), "--config", str(tmp_path / "pyproject.toml"),
                 "--epochs", "2"]) == 2
    assert "epochs" not in capsys.readouterr().err


def _manifest(planted: Planted) -> Path:
    rows = ["path,label,split"]
    for split in planted.splits:
        for f in sorted(split.rglob("*")):
            if f.is_file():
                rows.append(f"{f.relative_to(planted.root).as_posix()},{f.parent.name},{split.name}")
    path = planted.root / "data.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_fix_reads_its_input_from_manifest_and_writes_with_write_manifest(planted: Planted, tmp_path: Path) -> None:
    data = _manifest(planted)
    out = tmp_path / "fixed.csv"
    assert main(["fix", "--manifest", str(data), "--backbone", "none", "--write-manifest", str(out)]) == 0
    assert out.read_text().startswith("path,label,split\n") and data.read_text() != out.read_text()
    assert main(["check", "--manifest", str(out), "--backbone", "none", "--quiet"]) == 0
    # From [tool.splitaudit] too, as check reads it; the old output meaning of --input-manifest is gone.
    (planted.root / "pyproject.toml").write_text('[tool.splitaudit]\nmanifest = "data.csv"\nbackbone = "none"\n')
    assert main(["fix", "--config", str(planted.root / "pyproject.toml")]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["fix", "--input-manifest", str(data)])
    assert exc.value.code == 2


def test_docs_list_every_setting() -> None:
    from splitaudit.options import markdown_table

    assert (ROOT / "docs" / "options.md").read_text().endswith("\n\n" + markdown_table())


@pytest.mark.tf
def test_explain_runs_with_the_settings_of_tool_splitaudit(tmp_path: Path) -> None:
    """A whole explain run (real Keras probes on scikit-learn's digits) takes epochs, seed and backbone from the
    config; the flag still wins."""
    pytest.importorskip("tensorflow")
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for split, rows in (("train", range(0, 120)), ("val", range(120, 180))):
        for i in rows:
            path = tmp_path / split / str(d.target[i]) / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((d.images[i] * 15).astype("uint8"), "L").save(path)
    config = tmp_path / "pyproject.toml"
    config.write_text('[tool.splitaudit]\nepochs = 1\nseed = 3\nbackbone = "none"\nselect = ["class-balance"]\n')
    docs = []
    for extra in ([], ["--epochs", "2"]):
        out = tmp_path / f"explain{len(extra)}.json"
        argv = ["explain", str(tmp_path / "train"), str(tmp_path / "val"), "--config", str(config), "--format", "json", "-o", str(out)]
        assert main([*argv, *extra]) == 0
        docs.append(json.loads(out.read_text()))
    for doc, epochs in zip(docs, (1, 2)):
        assert doc["data"]["features"] == "pixels:16"  # backbone = "none" from the config
        assert {len(s["epochs"]) for s in doc["subjects"]} == {epochs}
