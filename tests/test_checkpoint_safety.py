"""Checkpoints can't run code or lie: solvers.checkpoint refuses code-bearing pickles without
running them, verifies a stored checksum (a flipped byte in the tensor data is an error, not a
silently different resume), and names the file and what is wrong for every unusable file; the
demos verify every checkpoint before any training and refuse --resume without one."""
from __future__ import annotations

import os
import pathlib
import pickle

import pytest
import torch

from demos import method_table, train, train_pc
from solvers import checkpoint
from solvers.checkpoint import CheckpointError

pytest.importorskip("sklearn")

# 97 training images, minibatches of 8: 12 presentations per epoch; checkpoints every 8
TINY = {"task": "digits", "digits": {"n_test": 1700, "seed": 0}, "hidden": [6],
        "network": {"dtype": "float64"}, "methods": ["backprop"],
        "method": {"backprop": {"eta": 0.1, "period": 1.0, "dt": 1.0}},
        "training": {"epochs": 1, "batch": 8, "seeds": 2, "checkpoint_every": 64}}
PC_TINY = {"traced_presentations": 1, "gaussian_mixture": {"n_train": 64, "n_test": 64},
           "network": {"widths": [2, 6, 2]},
           "training": {"epochs": 1, "batch": 16, "eval_every": 2, "checkpoint_every": 2}}


class Marker:
    """Unpickling this creates ``path``: the code a crafted checkpoint would run on load."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


def flip_tensor_byte(path, tensor: torch.Tensor, offset: int = 3) -> None:
    """Flip one bit of ``tensor``'s stored data inside the checkpoint file at ``path``."""
    data = bytearray(pathlib.Path(path).read_bytes())
    raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    at = bytes(data).find(raw)
    assert at >= 0, "the tensor's bytes are stored uncompressed in torch's zip"
    data[at + offset] ^= 0x01
    pathlib.Path(path).write_bytes(bytes(data))


# -- solvers.checkpoint -----------------------------------------------------------------------

def test_round_trip_is_exact_and_readable_by_torch(tmp_path):
    payload = {"y": {"W": torch.randn(2, 3, 4, dtype=torch.float64),
                     "b": torch.randn(2, 4, dtype=torch.float32)},
               "diverged": torch.tensor([False, True]), "k": 8, "seconds": 1.25,
               "history": {"epoch": [0.0, 1.0], "acc": [[0.1, 0.2], [0.3, 0.4]]},
               "name": "di", "none": None, "pair": (1, 2)}
    path = tmp_path / "c.pt"
    checkpoint.save(path, payload)
    back = checkpoint.load(path, required=("y", "k"))
    assert set(back) == set(payload)
    assert all(torch.equal(back["y"][k], payload["y"][k]) for k in payload["y"])
    assert back["y"]["b"].dtype == torch.float32
    assert torch.equal(back["diverged"], payload["diverged"])
    assert {k: back[k] for k in ("k", "seconds", "history", "name", "none", "pair")} == \
        {k: payload[k] for k in ("k", "seconds", "history", "name", "none", "pair")}
    raw = torch.load(path, weights_only=True)                # still a plain torch file
    assert raw[checkpoint.CHECKSUM_KEY] == checkpoint.digest(payload)
    assert raw[checkpoint.CHECKSUM_KEY].startswith("sha256:")
    assert not list(tmp_path.glob("*.tmp"))                  # written atomically


def test_checksum_changes_with_any_value():
    base = {"y": torch.zeros(3), "k": 1, "h": [1.0]}
    d = checkpoint.digest(base)
    assert checkpoint.digest({"y": torch.zeros(3), "k": 1, "h": [1.0]}) == d
    for other in ({"y": torch.tensor([0.0, 0.0, 1e-30]), "k": 1, "h": [1.0]},
                  {"y": torch.zeros(3, dtype=torch.float64), "k": 1, "h": [1.0]},
                  {"y": torch.zeros(1, 3), "k": 1, "h": [1.0]},
                  {"y": torch.zeros(3), "k": 2, "h": [1.0]},
                  {"y": torch.zeros(3), "k": 1.0, "h": [1.0]},
                  {"y": torch.zeros(3), "k": True, "h": [1.0]},
                  {"y": torch.zeros(3), "k": 1, "h": (1.0,)}):
        assert checkpoint.digest(other) != d


@pytest.mark.parametrize("container", ["torch", "pickle"])
def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, container):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    evil = {"k": 0, "y": Marker(marker)}
    if container == "torch":
        torch.save(evil, path)
    else:
        path.write_bytes(pickle.dumps(evil))
    # the payload is live: an unsafe load would run it (proved on a copy, with its own marker)
    live = tmp_path / "live_copy_ran"
    pickle.loads(pickle.dumps({"y": Marker(live)}))
    assert live.exists()
    with pytest.raises(CheckpointError, match=r"refused by the weights-only reader") as err:
        checkpoint.load(path)
    assert str(path) in str(err.value)
    assert "nothing in it ran" in str(err.value)
    assert not marker.exists()


def test_a_code_bearing_checkpoint_is_refused_by_resume_before_training(tmp_path):
    marker = tmp_path / "code_ran"
    path = train.checkpoint_path(tmp_path, "digits", "backprop")
    path.parent.mkdir(parents=True)
    torch.save({"config": {}, "y": Marker(marker)}, path)
    with pytest.raises(CheckpointError, match="refused") as err:
        train.run(TINY, tmp_path, resume=True, progress=False)
    assert str(path) in str(err.value)
    assert not marker.exists()
    assert not (tmp_path / "summary.json").exists()


def test_a_flipped_byte_in_the_tensor_data_is_detected(tmp_path):
    W = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    path = tmp_path / "c.pt"
    checkpoint.save(path, {"y": {"W": W}, "k": 4})
    flip_tensor_byte(path, W)
    changed = torch.load(path, weights_only=True)["y"]["W"]
    assert not torch.equal(changed, W)                 # torch alone would load it silently
    with pytest.raises(CheckpointError, match=r"checksum mismatch.*changed after it was "
                                              r"written") as err:
        checkpoint.load(path)
    assert str(path) in str(err.value)


def make_file(kind: str, path: pathlib.Path, good: bytes) -> None:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "text":
        path.write_text("config: {}\nk: 3\n")
    elif kind == "not_a_dict":
        torch.save([1, 2, 3], path)
    elif kind == "no_checksum":
        torch.save({"k": 1, "y": torch.zeros(2)}, path)
    elif kind == "bad_checksum":
        torch.save({"k": 1, "y": torch.zeros(2), checkpoint.CHECKSUM_KEY: "sha256:0"}, path)


@pytest.mark.parametrize("kind,match", [
    ("empty", r"empty file \(0 bytes"),
    ("truncated", r"cannot be read as a checkpoint .*truncated or not a checkpoint"),
    ("garbage", r"refused by the weights-only reader|cannot be read as a checkpoint"),
    ("text", r"refused by the weights-only reader|cannot be read as a checkpoint"),
    ("not_a_dict", r"holds a list, expected a mapping"),
    ("no_checksum", r"no checksum .*cannot be verified"),
    ("bad_checksum", r"checksum mismatch"),
])
def test_unusable_files_name_the_file_and_what_is_wrong(tmp_path, kind, match):
    good = tmp_path / "good.pt"
    checkpoint.save(good, {"k": 1, "y": torch.zeros(2)})
    path = tmp_path / f"{kind}.pt"
    make_file(kind, path, good.read_bytes())
    with pytest.raises(CheckpointError, match=match) as err:
        checkpoint.load(path)
    assert isinstance(err.value, ValueError)
    assert str(path) in str(err.value)
    assert "--resume" in str(err.value) or "expected" in str(err.value)


def test_missing_file_directory_and_missing_keys(tmp_path):
    with pytest.raises(CheckpointError, match=r"no such file") as err:
        checkpoint.load(tmp_path / "nope.pt")
    assert "nope.pt" in str(err.value)
    with pytest.raises(CheckpointError, match=r"not a regular file"):
        checkpoint.load(tmp_path)
    checkpoint.save(tmp_path / "c.pt", {"k": 1})
    with pytest.raises(CheckpointError, match=r"c\.pt.*missing keys \['y'\]"):
        checkpoint.load(tmp_path / "c.pt", required=("k", "y"))


def test_save_refuses_what_load_could_not_verify_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "c.pt"
    checkpoint.save(path, {"k": 1})
    with pytest.raises(TypeError, match=r"payload\['obj'\]: received Marker"):
        checkpoint.save(path, {"k": 2, "obj": Marker(tmp_path / "m")})
    with pytest.raises(ValueError, match="reserved key"):
        checkpoint.save(path, {checkpoint.CHECKSUM_KEY: "x"})
    assert checkpoint.load(path)["k"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_check_state_names_the_entry_and_the_shapes(tmp_path):
    expected = {"W_1": torch.zeros(2, 3), "b_1": torch.zeros(2, 1)}
    checkpoint.check_state("c.pt", "y", {"b_1": torch.ones(2, 1), "W_1": torch.ones(2, 3)},
                           expected)
    with pytest.raises(CheckpointError, match=r"'c\.pt': y\['W_1'\] is a float32 tensor of "
                                              r"shape \(3, 3\), expected a float32 tensor of "
                                              r"shape \(2, 3\)"):
        checkpoint.check_state("c.pt", "y", {"W_1": torch.zeros(3, 3), "b_1": torch.zeros(2, 1)},
                               expected)
    with pytest.raises(CheckpointError, match=r"y holds keys \['W_1'\], expected"):
        checkpoint.check_state("c.pt", "y", {"W_1": torch.zeros(2, 3)}, expected)
    with pytest.raises(CheckpointError, match=r"y\['b_1'\] is a float64 tensor"):
        checkpoint.check_state("c.pt", "y", {"W_1": torch.zeros(2, 3),
                                             "b_1": torch.zeros(2, 1, dtype=torch.float64)},
                               expected)


# -- demos.train -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny backprop run; each test copies its checkpoint folder."""
    out = tmp_path_factory.mktemp("train")
    summary = train.run(TINY, out, progress=False)
    return out, summary


def copy_run(src, dst):
    path = train.checkpoint_path(dst, "digits", "backprop")
    path.parent.mkdir(parents=True)
    path.write_bytes(train.checkpoint_path(src, "digits", "backprop").read_bytes())
    return path


def test_resume_of_a_finished_run_reads_it_back(finished, tmp_path):
    out, summary = finished
    copy_run(out, tmp_path)
    again = train.run(TINY, tmp_path, resume=True, progress=False)
    assert [r["test_accuracy"] for r in again["runs"]] == \
        [r["test_accuracy"] for r in summary["runs"]]


def test_a_flipped_byte_in_train_weights_stops_the_resume(finished, tmp_path, capsys):
    out, _ = finished
    path = copy_run(out, tmp_path)
    W = checkpoint.load(path)["y"]["W_1"]
    flip_tensor_byte(path, W, offset=11)
    with pytest.raises(CheckpointError, match="checksum mismatch") as err:
        train.run(TINY, tmp_path, resume=True, progress=False)
    assert str(path) in str(err.value)
    assert not (tmp_path / "summary.json").exists()
    config = tmp_path / "tiny.yaml"
    config.write_text(_yaml(TINY))
    with pytest.raises(SystemExit) as exit_:
        train.main(["--config", str(config), "--out", str(tmp_path), "--resume"])
    assert exit_.value.code == 2
    err_text = capsys.readouterr().err
    assert "checksum mismatch" in err_text and str(path) in err_text
    assert "Traceback" not in err_text


def test_a_wrongly_shaped_train_checkpoint_is_named(finished, tmp_path):
    out, _ = finished
    path = copy_run(out, tmp_path)
    saved = checkpoint.load(path)
    saved["y"] = {**saved["y"], "W_1": saved["y"]["W_1"][:, :3]}      # a narrower layer
    checkpoint.save(path, saved)                                       # a valid checksum
    with pytest.raises(CheckpointError, match=r"y\['W_1'\] is a float64 tensor of shape") as err:
        train.run(TINY, tmp_path, resume=True, progress=False)
    assert str(path) in str(err.value)
    saved = checkpoint.load(copy_run(out, tmp_path / "b"))
    saved["k"] = 10 ** 6
    checkpoint.save(train.checkpoint_path(tmp_path / "b", "digits", "backprop"), saved)
    with pytest.raises(CheckpointError, match=r"k is 1000000, expected an integer in \[0, 12\]"):
        train.run(TINY, tmp_path / "b", resume=True, progress=False)


def test_a_checkpoint_of_another_config_is_refused(finished, tmp_path):
    out, _ = finished
    path = copy_run(out, tmp_path)
    other = {**TINY, "method": {"backprop": {"eta": 0.2, "period": 1.0, "dt": 1.0}}}
    with pytest.raises(CheckpointError, match=r"different config \(differing keys: "
                                              r"\['method\.backprop'\]\)") as err:
        train.run(other, tmp_path, resume=True, progress=False)
    assert str(path) in str(err.value)


# -- --resume without a checkpoint: an error in every demo, before any work ------------------

def _yaml(config) -> str:
    import yaml
    return yaml.safe_dump(config)


def test_train_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    with pytest.raises(CheckpointError, match=r"--resume: no checkpoint in .*checkpoints") \
            as err:
        train.run(TINY, tmp_path / "empty", resume=True, progress=False)
    assert str(tmp_path / "empty") in str(err.value)
    assert not (tmp_path / "empty" / "summary.json").exists()
    config = tmp_path / "tiny.yaml"
    config.write_text(_yaml(TINY))
    with pytest.raises(SystemExit) as exit_:
        train.main(["--config", str(config), "--out", str(tmp_path / "o"), "--resume"])
    assert exit_.value.code == 2
    assert "--resume: no checkpoint in" in capsys.readouterr().err
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_method_table_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(_yaml(TINY))
    with pytest.raises(SystemExit) as exit_:
        method_table.main(["--out", str(tmp_path / "o"), "--configs", str(config), "--resume"])
    assert exit_.value.code == 2
    text = capsys.readouterr().err
    assert "--resume: no checkpoint in" in text and str(tmp_path / "o") in text


def test_train_pc_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    with pytest.raises(CheckpointError, match=r"--resume: no checkpoint in .*checkpoint\.pt"):
        train_pc.run(PC_TINY, tmp_path / "empty", resume=True, progress=False)
    assert not (tmp_path / "empty" / "summary.json").exists()
    config = tmp_path / "tiny.yaml"
    config.write_text(_yaml(PC_TINY))
    with pytest.raises(SystemExit) as exit_:
        train_pc.main(["--config", str(config), "--out", str(tmp_path / "o"), "--resume"])
    assert exit_.value.code == 2
    assert "--resume: no checkpoint in" in capsys.readouterr().err


def test_train_pc_flipped_byte_and_wrong_shape_are_refused(tmp_path, capsys):
    train_pc.run(PC_TINY, tmp_path, stop_after=2, progress=False)
    path = tmp_path / train_pc.CHECKPOINT
    good = path.read_bytes()
    saved = checkpoint.load(path)
    name, tensor = next((k, v) for k, v in saved["state"].items() if v.numel() >= 4)
    flip_tensor_byte(path, tensor)
    with pytest.raises(CheckpointError, match="checksum mismatch") as err:
        train_pc.run(PC_TINY, tmp_path, resume=True, progress=False)
    assert str(path) in str(err.value)
    config = tmp_path / "tiny.yaml"
    config.write_text(_yaml(PC_TINY))
    with pytest.raises(SystemExit) as exit_:
        train_pc.main(["--config", str(config), "--out", str(tmp_path), "--resume"])
    assert exit_.value.code == 2
    assert "checksum mismatch" in capsys.readouterr().err
    path.write_bytes(good)
    saved["state"] = {**saved["state"], name: saved["state"][name][..., :1]}
    checkpoint.save(path, saved)
    with pytest.raises(CheckpointError, match=rf"state\['{name}'\] is a .* tensor of shape"):
        train_pc.run(PC_TINY, tmp_path, resume=True, progress=False)
    os.remove(path)
