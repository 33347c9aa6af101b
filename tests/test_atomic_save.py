"""Saving is atomic and loading verifies (issue 14, items 3 and 6).

A real child process is SIGKILLed at each step of ``save`` (``INC_FLOW_TEST_KILL_AT``); a
real full filesystem (an 80 KiB tmpfs, when this process may mount one) and a simulated
ENOSPC; a mixed pair of files; tensors that do not fit the plan; malformed configure files.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from inc_flow.cli import main as cli_main
from inc_flow.errors import IncFlowError, SaveLoadError
from inc_flow.model import atomic, faults
from inc_flow.model.output import CONFIGURE_FILE, WEIGHTS_FILE, load
from inc_flow.quant.tensors import describe_state
from tests.helpers.saving import int8_tinynet, shifted
from tests.toys import SHAPE, TinyNet

pytestmark = pytest.mark.no_mlflow
ROOT = Path(__file__).resolve().parents[1]
X = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def old():
    return int8_tinynet(1)


@pytest.fixture(scope="module")
def new(old):
    return shifted(old)


def _outputs(directory: Path) -> torch.Tensor:
    return load(directory, TinyNet())(X)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".saving-" in p.name or ".old-" in p.name)


def _kill_while_saving(shift: float, pairs: list[tuple[str, Path]]) -> list[str]:
    """One real process per (step, output), each SIGKILLed by the hook at its step;
    ``STEP=<exit status>`` of each, in order (see tests/helpers/saving.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(faults.KILL_AT_ENV, None)
    command = [sys.executable, "-m", "tests.helpers.saving", str(shift)]
    command += [f"{step}={out}" for step, out in pairs]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done.stdout.decode().split()


# --- kill -9 while saving ---------------------------------------------------------------------
STEPS = [faults.AFTER_WEIGHTS_WRITTEN, faults.AFTER_CONFIGURE_WRITTEN, faults.AFTER_OLD_MOVED]


@pytest.mark.slow
def test_kill_9_at_each_save_step_never_leaves_a_pair_load_accepts(tmp_path, old, new):
    """Over an existing output: killed before the swap, load returns the old model exactly;
    killed between the two renames, load says where the old output is; a new save then
    succeeds. In place (the directory holds a file of the user's), the user's file stays."""
    expected_old, expected_new = old(X), new(X)
    outs = {}
    for step in STEPS:
        out = tmp_path / step / "out"
        old.save(out)
        outs[step] = out
    inplace = tmp_path / "inplace"
    old.save(inplace)
    (inplace / "notes.txt").write_text("mine")
    pairs = [(step, outs[step]) for step in STEPS] + [(faults.AFTER_OLD_MOVED, inplace)]
    statuses = _kill_while_saving(0.25, pairs)
    assert statuses == [f"{step}=-9" for step, _ in pairs]

    for step in (faults.AFTER_WEIGHTS_WRITTEN, faults.AFTER_CONFIGURE_WRITTEN):
        assert torch.equal(_outputs(outs[step]), expected_old), step
    out = outs[faults.AFTER_OLD_MOVED]
    assert not out.exists()
    with pytest.raises(SaveLoadError, match="interrupted.*previous output is complete") as e:
        load(out, TinyNet())
    moved = Path(str(e.value).split("complete in ")[1].split("'")[1])
    assert torch.equal(_outputs(moved), expected_old)  # nothing of the old output was lost

    with pytest.raises(SaveLoadError, match=f"no {CONFIGURE_FILE}"):
        load(inplace, TinyNet())
    assert (inplace / "notes.txt").read_text() == "mine"

    for directory in [*outs.values(), inplace]:  # saving again repairs every case
        new.save(directory)
        assert torch.equal(_outputs(directory), expected_new)
    assert (inplace / "notes.txt").read_text() == "mine"


def test_a_mixed_pair_is_refused_naming_both_files(tmp_path, old, new):
    """The issue's case: a new configure file beside old weights."""
    old.save(tmp_path / "a")
    new.save(tmp_path / "b")
    shutil.copy(tmp_path / "b" / CONFIGURE_FILE, tmp_path / "a" / CONFIGURE_FILE)
    with pytest.raises(SaveLoadError, match="sha256") as e:
        load(tmp_path / "a", TinyNet())
    assert str(tmp_path / "a" / WEIGHTS_FILE) in str(e.value)
    assert str(tmp_path / "a" / CONFIGURE_FILE) in str(e.value)


def test_save_replaces_an_output_and_leaves_nothing_behind(tmp_path, old, new):
    out = tmp_path / "out"
    old.save(out)
    new.save(out)
    assert sorted(p.name for p in out.iterdir()) == [CONFIGURE_FILE, WEIGHTS_FILE]
    assert _leftovers(tmp_path) == []
    data = yaml.safe_load((out / CONFIGURE_FILE).read_text())
    assert data["weights"]["sha256"] == atomic.sha256_file(out / WEIGHTS_FILE)
    assert data["weights"]["tensors"]["conv1.weight"] == "qint8[16, 1, 3, 3]"
    assert torch.equal(_outputs(out), new(X))


def test_a_pair_saved_before_the_sha256_was_recorded_loads_with_a_warning(tmp_path, old, caplog):
    old.save(tmp_path)
    data = yaml.safe_load((tmp_path / CONFIGURE_FILE).read_text())
    del data["weights"]
    (tmp_path / CONFIGURE_FILE).write_text(yaml.safe_dump(data, sort_keys=False))
    assert torch.equal(_outputs(tmp_path), old(X))
    assert "unverified" in caplog.text


# --- a full disk ------------------------------------------------------------------------------
def _check_full_disk(out: Path, old, new, caught: pytest.ExceptionInfo) -> None:
    assert isinstance(caught.value, IncFlowError)  # the CLI exits 2
    assert str(out) in str(caught.value)
    assert "No space left on device" in str(caught.value)
    assert "previous output there is unchanged" in str(caught.value)
    assert _leftovers(out.parent) == []
    assert torch.equal(_outputs(out), old(X))


@pytest.fixture
def tiny_fs(tmp_path):
    """An 80 KiB tmpfs (root only); skipped where it cannot be mounted."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=80k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_real_full_disk_is_a_save_error_and_keeps_the_old_output(tiny_fs, old, new):
    out = tiny_fs / "out"
    old.save(out)  # ~56 KiB: fits once, not twice
    with pytest.raises(SaveLoadError) as caught:
        new.save(out)
    _check_full_disk(out, old, new, caught)


def test_enospc_from_torch_save_is_a_save_error(tmp_path, old, new, monkeypatch):
    """What torch does on a full disk, wherever a tmpfs cannot be mounted: part of the file
    written, then a RuntimeError whose context is the OSError."""
    out = tmp_path / "out"
    old.save(out)

    def full(obj, f):
        f.write(b"partial")
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")  # noqa: B904

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(SaveLoadError) as caught:
        new.save(out)
    monkeypatch.undo()
    _check_full_disk(out, old, new, caught)


def test_an_output_that_is_a_file_is_named(tmp_path, old):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SaveLoadError, match="is a file"):
        old.save(tmp_path / "f")


# --- tensors that do not fit the plan ---------------------------------------------------------
def _tamper(directory: Path, change) -> None:
    """Change the saved state dict and record the change in the configure file, as a tool
    that rewrote both files would: only the check against the model can catch it."""
    state = torch.load(directory / WEIGHTS_FILE, weights_only=True)
    change(state)
    torch.save(state, directory / WEIGHTS_FILE)
    data = yaml.safe_load((directory / CONFIGURE_FILE).read_text())
    data["weights"]["sha256"] = atomic.sha256_file(directory / WEIGHTS_FILE)
    data["weights"]["tensors"] = describe_state(state)
    (directory / CONFIGURE_FILE).write_text(yaml.safe_dump(data, sort_keys=False))


def _packed_bias(state, dtype):
    w, b = state["fc1._packed_params._packed_params"]
    state["fc1._packed_params._packed_params"] = (w, b.to(dtype))


def _qint32_weight(state):
    w = state["conv1.weight"].dequantize()
    state["conv1.weight"] = torch.quantize_per_tensor(w, 0.01, 0, torch.qint32)


def _negative_channel_scale(state):
    w = state["conv2.weight"]
    scales = w.q_per_channel_scales().clone()
    scales[3] = -scales[3]
    state["conv2.weight"] = torch._make_per_channel_quantized_tensor(
        w.int_repr(), scales, w.q_per_channel_zero_points(), w.q_per_channel_axis()
    )


TAMPERED = [
    (
        lambda s: s.__setitem__("conv1.bias", s["conv1.bias"].double()),
        r"conv1\.bias: dtype float64",
    ),
    (
        lambda s: _packed_bias(s, torch.float64),
        r"fc1\._packed_params\._packed_params\[1\]: dtype float64",
    ),
    (lambda s: s.__setitem__("conv1.scale", torch.tensor(float("nan"))), r"conv1\.scale: a scale"),
    (
        lambda s: s.__setitem__("fc2.scale", torch.tensor(-0.5)),
        r"fc2\.scale: a scale must be finite and > 0",
    ),
    (_qint32_weight, r"conv1\.weight: dtype qint32, the model expects qint8"),
    (_negative_channel_scale, r"conv2\.weight: scales must be finite and > 0"),
    (
        lambda s: s.__setitem__("conv1.bias", torch.full((16,), float("nan"))),
        r"conv1\.bias: holds NaN",
    ),
    (
        lambda s: s.__setitem__("conv1.bias", torch.zeros(3)),
        r"conv1\.bias: saved \(3,\), model \(16,\)",
    ),
]


@pytest.mark.parametrize(("change", "what"), TAMPERED)
def test_tensors_that_do_not_fit_the_plan_are_refused_naming_the_key(tmp_path, old, change, what):
    old.save(tmp_path)
    _tamper(tmp_path, change)
    with pytest.raises(SaveLoadError, match=what) as e:
        load(tmp_path, TinyNet())
    assert str(tmp_path / WEIGHTS_FILE) in str(e.value)


def test_weights_changed_behind_the_configure_file_are_named(tmp_path, old):
    old.save(tmp_path)
    state = torch.load(tmp_path / WEIGHTS_FILE, weights_only=True)
    state["conv1.bias"] = state["conv1.bias"].double()
    torch.save(state, tmp_path / WEIGHTS_FILE)
    with pytest.raises(SaveLoadError, match=r"sha256 is [0-9a-f]{64}, `weights\.sha256` records"):
        load(tmp_path, TinyNet())


# --- malformed configure files ----------------------------------------------------------------
def _edit(directory: Path, **changes) -> None:
    data = yaml.safe_load((directory / CONFIGURE_FILE).read_text())
    data.update(changes)
    (directory / CONFIGURE_FILE).write_text(yaml.safe_dump(data, sort_keys=False))


MALFORMED = [
    ({"op": [1, 2]}, r"`op\[0\]` must be a mapping with `name` and `type`, got 1"),
    ({"op": {"a": 1}}, r"`op` must be a list of ops, got dict"),
    ({"op": [{"name": "fc1", "type": "Linear", "weight": [1]}]}, r"`op\[0\]\.weight`"),
    ({"approach": ["x"]}, r"`approach` must be a string"),
    (
        {"example_inputs": [{"shape": [-1, 2]}]},
        r"`example_inputs\[0\]\.shape` must be a list of positive",
    ),
    ({"example_inputs": [{"shape": [1], "dtype": "Tensor"}]}, r"`example_inputs\[0\]\.dtype`"),
    ({"example_inputs": "x"}, r"`example_inputs` must be a list"),
    ({"weights": {"sha256": "abc"}}, r"`weights\.sha256` must be 64"),
    ({"weights": []}, r"`weights` must be a mapping"),
    ({"backend": "tpu"}, r"does not describe a valid plan.*backend"),
]


@pytest.mark.parametrize(("changes", "what"), MALFORMED)
def test_malformed_configure_content_names_the_file_and_the_key(tmp_path, old, changes, what):
    old.save(tmp_path)
    _edit(tmp_path, **changes)
    with pytest.raises(SaveLoadError, match=what) as e:
        load(tmp_path, TinyNet())
    assert str(tmp_path / CONFIGURE_FILE) in str(e.value)


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"\x80\xffPK\x03\x04 binary garbage", "is not UTF-8 text"),
        (b"- 1\n- 2\n", "must be a mapping of keys.*got list"),
        (b"just a string\n", "must be a mapping of keys.*got str"),
    ],
)
def test_a_configure_file_that_is_not_a_mapping_exits_2(tmp_path, old, capsys, content, what):
    out = tmp_path / "out"
    old.save(out)
    (out / CONFIGURE_FILE).write_bytes(content)
    with pytest.raises(SaveLoadError, match=what):
        load(out, TinyNet())
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump({"model": {"name": "tiny", "factory": "tests.toys:TinyNet"}}))
    log = __import__("logging").getLogger("inc_flow")
    saved = (log.handlers[:], log.level, log.propagate)
    try:
        assert cli_main(["stats", str(out), "--config", str(conf)]) == 2
    finally:
        log.handlers[:], log.level, log.propagate = saved
    err = capsys.readouterr().err
    assert str(out / CONFIGURE_FILE) in err and "Error" not in err.split(":")[0]


def test_only_a_quantization_scale_must_be_positive():
    """A scale is one with a zero point beside it; a user's parameter named `scale` (or
    `logit_scale`) may be negative."""
    from inc_flow.quant.tensors import check_state

    one, zero = torch.tensor(1.0), torch.tensor(0)
    expected = {
        "scale": one,
        "head.logit_scale": one,
        "conv1.scale": one,
        "conv1.zero_point": zero,
        "conv1_input_scale_0": one,
        "conv1_input_zero_point_0": zero,
    }
    saved = {**expected, **{k: torch.tensor(-2.0) for k in expected if "scale" in k}}
    problems = check_state(expected, saved)
    assert [p.split(":")[0] for p in problems] == ["conv1.scale", "conv1_input_scale_0"]
