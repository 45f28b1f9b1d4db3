"""Configs and command lines: duplicate YAML keys are errors naming the key and the file; a
partial config merges over the demo's (task's) defaults in every demo, unknown keys stay errors;
--out is checked for writability before any work; bad flag values are usage errors, never
tracebacks."""
from __future__ import annotations

import os
import stat

import pytest
import yaml

from demos import (config as cfg, method_config, method_table, reproduce_bengio2020,
                   reproduce_mertens, reproduce_podlaski2020, reproduce_song2020, settle, sweep,
                   train, train_pc, train_sweep, train_tp)

pytest.importorskip("sklearn")

ROOT = method_config.ROOT


def write(tmp_path, text: str, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def usage_error(capsys, main, argv) -> str:
    """Run ``main(argv)``: it must exit with argparse's usage error (2) and no traceback;
    returns stderr."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "Traceback" not in err
    return err


# -- duplicate keys ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,key,lines", [
    ("seed: 0\npoints: 10\nseed: 1\n", "seed", (1, 3)),
    ("network:\n  widths: [4, 8, 3]\n  activation: tanh\n  widths: [4, 3]\n", "widths", (2, 4)),
    ("solver: {dt: 0.1, dt: 0.2}\n", "dt", (1, 1)),
])
def test_duplicate_yaml_keys_are_errors_naming_the_key_and_file(tmp_path, text, key, lines):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=rf"duplicate key '{key}' \(line {lines[0]} and again "
                                         rf"line {lines[1]}\)") as err:
        cfg.read_yaml(path)
    assert str(path) in str(err.value)
    with pytest.raises(ValueError, match=rf"duplicate key '{key}'"):
        settle.load(path)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    path = write(tmp_path, "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n")
    assert cfg.read_yaml(path)["other"] == {"x": 1, "y": 3}


@pytest.mark.parametrize("load,text", [
    (train.load, "task: digits\ntraining: {epochs: 2}\ntraining: {epochs: 3}\n"),
    (train_pc.load, "training:\n  epochs: 1\n  epochs: 2\n"),
    (train_tp.load, "tau: 1.0\ntau: 2.0\n"),
    (train_sweep.load, "eta: 0.1\neta: 0.2\n"),
    (sweep.load, "seed: 1\nseed: 2\n"),
])
def test_every_demo_refuses_duplicate_keys(tmp_path, load, text):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=r"duplicate key '(training|epochs|tau|eta|"
                                         r"seed)'") as err:
        load(path)
    assert str(path) in str(err.value)


def test_duplicate_keys_on_the_command_line_are_usage_errors(tmp_path, capsys):
    path = write(tmp_path, "task: digits\nhidden: [8]\nhidden: [16]\n")
    err = usage_error(capsys, train.main, ["--config", str(path), "--out", str(tmp_path / "o")])
    assert "duplicate key 'hidden'" in err and str(path) in err
    assert not (tmp_path / "o").exists()
    path = write(tmp_path, "points: 10\npoints: 20\n", "s.yaml")
    err = usage_error(capsys, settle.main, ["--config", str(path), "--out", str(tmp_path / "s")])
    assert "duplicate key 'points'" in err


def test_a_config_that_is_not_text_names_the_file(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(ValueError, match="not a UTF-8 text file") as err:
        cfg.read_yaml(path)
    assert str(path) in str(err.value)


# -- partial configs merge over the task's defaults -------------------------------------------

def test_train_partial_config_merges_over_the_tasks_shipped_config(tmp_path):
    shipped = cfg.read_yaml(ROOT / "configs" / "digits.yaml")
    path = write(tmp_path, "training: {epochs: 2}\nmethod:\n  backprop: {eta: 0.2, period: 1.0, "
                           "dt: 1.0}\n")
    got = train.load(path)
    assert got["task"] == "digits"
    assert got["training"] == {**shipped["training"], "epochs": 2}
    assert got["method"]["backprop"] == {"eta": 0.2, "period": 1.0, "dt": 1.0}
    # methods not named keep the task's settings (not MethodSpec's built-in defaults)
    assert got["method"]["di"] == shipped["method"]["di"]
    assert train.spec(got, "di").period == 15.0 and train.spec(got, "di").gate == "settled"
    assert got["methods"] == shipped["methods"] and got["hidden"] == shipped["hidden"]
    assert got["digits"] == shipped["digits"]
    assert got["network"]["activation"] == "tanh"
    # an empty config is the shipped one
    assert train.load(write(tmp_path, "", "empty.yaml")) == train.load(ROOT / "configs" /
                                                                        "digits.yaml")


def test_train_partial_config_of_another_task_merges_over_that_tasks_config(tmp_path):
    shipped = cfg.read_yaml(ROOT / "configs" / "mnist1d.yaml")
    got = train.load(write(tmp_path, "task: mnist1d\nhidden: [16]\n"))
    assert got["hidden"] == [16]
    assert got["training"] == shipped["training"]
    assert got["mnist1d"] == shipped["mnist1d"]
    assert got["method"]["dfc"] == shipped["method"]["dfc"]


def test_train_partial_config_runs_what_it_says(tmp_path):
    """The issue's case: `--config` with a partial file must not silently run built-in
    defaults (period 1, dt 1, gate always) for the methods it does not name."""
    got = train.load({"methods": ["di"]})
    s = train.spec(got, "di")
    assert (s.period, s.dt, s.gate, s.integrator) == (15.0, 1.5, "settled", "exp_partitioned")


@pytest.mark.parametrize("load,text,key,value,default_file", [
    (settle.load, "points: 50\n", "points", 50, "settle.yaml"),
    (train_pc.load, "training: {epochs: 1}\n", "training", None, "train_pc.yaml"),
    (train_tp.load, "tau: 2.0\n", "tau", 2.0, "train_tp.yaml"),
    (sweep.load, "seed: 3\n", "seed", 3, "sweep.yaml"),
])
def test_every_demo_merges_a_partial_config_over_its_defaults(tmp_path, load, text, key, value,
                                                              default_file):
    shipped = cfg.read_yaml(ROOT / "configs" / default_file)
    got = load(write(tmp_path, text))
    if value is not None:
        assert got[key] == value
    else:                                           # a section: merged key by key
        assert got["training"] == {**shipped["training"], "epochs": 1}
    untouched = [k for k in shipped if k != key and not isinstance(shipped[k], dict)]
    assert untouched
    for k in untouched:
        assert got[k] == shipped[k], k


def test_train_sweep_merges_a_partial_config_and_its_circuit_args(tmp_path):
    shipped = cfg.read_yaml(ROOT / "configs" / "train_sweep.yaml")
    got = train_sweep.load(write(tmp_path, "presentations: 8\ncircuit_args: {k_i: 2.0}\n"))
    assert got.presentations == 8
    assert got.circuit_args == {**shipped["circuit_args"], "k_i": 2.0}
    assert (got.period, got.dt, got.eta) == (shipped["period"], shipped["dt"], shipped["eta"])
    swept = train_sweep.load({"axis": "k_i"})           # the default's k_i is not kept
    assert swept.circuit_args == {"k_p": shipped["circuit_args"]["k_p"]}


@pytest.mark.parametrize("load,given,named", [
    (train.load, {"trainig": {"epochs": 1}}, "trainig"),
    (train.load, {"training": {"epoch": 1}}, "epoch"),
    (train.load, {"method": {"di": {"speed": 1.0}}}, "speed"),
    (train_pc.load, {"learn": {"dtt": 1.0}}, "dtt"),
    (train_tp.load, {"tau2": 1.0}, "tau2"),
    (train_sweep.load, {"etta": 0.1}, "etta"),
    (settle.load, {"solver": {"dtt": 0.1}}, "dtt"),
])
def test_unknown_keys_stay_errors(load, given, named):
    with pytest.raises(ValueError, match=named) as err:
        load(given)
    assert "valid" in str(err.value) or "expected" in str(err.value)


# -- --out is checked before any work ----------------------------------------------------------

def blocked(tmp_path):
    """An output path no user can create (its parent is a regular file): fails for root too."""
    parent = tmp_path / "a_file"
    parent.write_text("not a folder")
    return parent / "out"


def test_output_dir_errors_name_the_parameter(tmp_path):
    with pytest.raises(ValueError, match=r"--out: received .*cannot be created") as err:
        cfg.output_dir(blocked(tmp_path), "--out")
    assert str(blocked(tmp_path)) in str(err.value)
    with pytest.raises(ValueError, match=r"out: received .*an existing file, not a folder"):
        cfg.output_dir(tmp_path / "a_file")
    assert cfg.output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert (tmp_path / "new" / "deeper").is_dir()
    assert not list((tmp_path / "new" / "deeper").iterdir())        # the probe is removed


def test_read_only_output_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        try:                                    # root (and some filesystems) bypass chmod
            (ro / "probe").write_text("x")
        except OSError:
            pass
        else:
            (ro / "probe").unlink()
            pytest.skip("this user can write to a read-only folder (root): covered by "
                        "test_output_dir_errors_name_the_parameter's blocked path")
        with pytest.raises(ValueError, match=r"--out: received .*cannot be written to"):
            cfg.output_dir(ro, "--out")
    finally:
        ro.chmod(stat.S_IRWXU)


@pytest.mark.parametrize("run,config", [
    (lambda c, out: train.run(c, out, progress=False), {"methods": ["backprop"]}),
    (lambda c, out: train_pc.run(c, out, progress=False), None),
    (lambda c, out: train_tp.run(c, out, progress=False), None),
    (train_sweep.run, None),
])
def test_library_runs_check_out_before_any_work(tmp_path, run, config):
    with pytest.raises(ValueError, match=r"^out: received .*cannot be created"):
        run(config, blocked(tmp_path))


@pytest.mark.parametrize("main,extra", [
    (train.main, ["--config", str(ROOT / "configs" / "digits.yaml")]),
    (method_table.main, []),
    (train_pc.main, []),
    (train_tp.main, []),
    (train_sweep.main, []),
    (settle.main, []),
    (sweep.main, []),
    (reproduce_bengio2020.main, []),
    (reproduce_mertens.main, ["--quick"]),
    (reproduce_podlaski2020.main, []),
    (reproduce_song2020.main, []),
])
def test_every_cli_checks_out_before_any_work(tmp_path, capsys, main, extra):
    out = blocked(tmp_path)
    err = usage_error(capsys, main, ["--out", str(out), *extra])
    assert "--out: received" in err and str(out) in err
    err = usage_error(capsys, main, ["--out", str(tmp_path / "a_file"), *extra])
    assert "--out: received" in err and "not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


# -- bad flag values: usage errors -------------------------------------------------------------

@pytest.mark.parametrize("main,argv,named", [
    (train.main, ["--config", "CONFIG", "--stop-after", "0"], "--stop-after"),
    (train.main, ["--config", "CONFIG", "--stop-after", "x"], "--stop-after"),
    (train.main, ["--config", "MISSING"], "MISSING"),
    (train_pc.main, ["--stop-after", "-1"], "--stop-after"),
    (train_tp.main, ["--config", "MISSING"], "MISSING"),
    (train_sweep.main, ["--config", "BAD"], "widths"),
    (method_table.main, ["--configs", "CONFIG", "CONFIG"], "one config per task"),
    (reproduce_mertens.main, ["--seeds", "0"], "--seeds"),
])
def test_bad_flag_values_are_usage_errors(tmp_path, capsys, main, argv, named):
    config = write(tmp_path, "methods: [backprop]\n")
    bad = write(tmp_path, "widths: 5\n", "bad.yaml")
    argv = [{"CONFIG": str(config), "MISSING": str(tmp_path / "missing.yaml"),
             "BAD": str(bad)}.get(a, a) for a in argv]
    err = usage_error(capsys, main, ["--out", str(tmp_path / "o"), *argv])
    assert named.replace("MISSING", "missing.yaml") in err
    assert not (tmp_path / "o").exists()


def test_partial_config_on_the_train_command_line_is_what_runs(tmp_path, monkeypatch):
    """`demos.train --config partial.yaml` trains with the task's settings for what the file
    does not name (checked on the plan, without training)."""
    path = write(tmp_path, "methods: [di]\ntraining: {epochs: 1}\n")
    seen = {}
    monkeypatch.setattr(train, "run", lambda plan, out, progress=True: seen.setdefault(
        "plan", plan) and (_ for _ in ()).throw(KeyboardInterrupt()))
    assert train.main(["--config", str(path), "--out", str(tmp_path / "o")]) == 130
    plan = seen["plan"]
    assert plan.cfg["training"]["epochs"] == 1 and plan.cfg["training"]["batch"] == 32
    assert train.spec(plan.cfg, "di").period == 15.0


def test_yaml_helper_is_unchanged_for_valid_files(tmp_path):
    text = "a: {x: 1, y: [1, 2]}\nb: 1e-3\n"
    assert cfg.read_yaml(write(tmp_path, text)) == {"a": {"x": 1, "y": [1, 2]}, "b": 1e-3}
    assert yaml.safe_load("a: 1") == {"a": 1}
    assert os.path.exists(tmp_path / "c.yaml")


def test_settle_refuses_a_sweep_instead_of_reporting_replica_0(tmp_path):
    from demos import settle
    config = {"circuits": ["DI"], "dynamic_inversion": {"alpha": [0.01, 0.1, 1.0]}}
    with pytest.raises(ValueError, match=r"config section 'dynamic_inversion': received 3 "
                                         r"replicas \(from \['alpha'\]\).*demos.sweep"):
        settle.run(config, tmp_path)
