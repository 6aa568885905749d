"""Tests for reading PyTorch checkpoints without torch (pderl_jax.interop.torch_checkpoint).

torch is not a dependency, so the fixtures are written by a separate minimal writer in this file
that emits pickle opcodes by hand and lays the files out as torch's serialization code does
(legacy format of torch <= 1.5, zip format of torch >= 1.6), with fresh random arrays every run;
each assertion message carries the NumPy seed. Real torch-written files are checked too when
tests/data/make_torch_fixtures.py has been run (skipped otherwise).
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pderl_jax.config import ConfigError, NetworkConfig
from pderl_jax.networks import apply_actor, init_actor, make_actor, to_torch_state_dict
from pderl_jax.interop.torch_checkpoint import load_official_actor, read_torch_state_dict

DATA = Path(__file__).parent / "data"
OFFICIAL_ACTOR_KEYS = [
    "w_l1.weight", "w_l1.bias", "lnorm1.gamma", "lnorm1.beta", "w_l2.weight", "w_l2.bias",
    "lnorm2.gamma", "lnorm2.beta", "w_out.weight", "w_out.bias",
]


# --------------------------------------------------------------------------------------------
# A minimal, independent torch.save: hand-written pickle protocol 2 (torch's default protocol)
# --------------------------------------------------------------------------------------------

@dataclass
class Global:
    """GLOBAL opcode: `module.name`, e.g. torch._utils._rebuild_tensor_v2."""

    module: str
    name: str


@dataclass
class Call:
    """REDUCE `func(*args)`, then BUILD with `state` and SETITEMS with `items` if given."""

    func: Any
    args: tuple = ()
    state: Any = None
    items: dict = field(default_factory=dict)


@dataclass
class PersId:
    """BINPERSID: a persistent id (torch's storage references)."""

    pid: tuple


def _op(obj) -> bytes:
    if obj is None:
        return b"N"
    if obj is True or obj is False:
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, int):
        if 0 <= obj < 256:
            return b"K" + bytes([obj])
        if -2**31 <= obj < 2**31:
            return b"J" + struct.pack("<i", obj)
        n = obj.bit_length() // 8 + 1
        return b"\x8a" + bytes([n]) + obj.to_bytes(n, "little", signed=True)
    if isinstance(obj, str):
        data = obj.encode()
        return b"X" + struct.pack("<I", len(data)) + data
    if isinstance(obj, Global):
        return b"c" + f"{obj.module}\n{obj.name}\n".encode()
    if isinstance(obj, Call):
        out = _op(obj.func) + _op(tuple(obj.args)) + b"R"
        if obj.state is not None:
            out += _op(obj.state) + b"b"
        if obj.items:
            out += b"(" + b"".join(_op(k) + _op(v) for k, v in obj.items.items()) + b"u"
        return out
    if isinstance(obj, PersId):
        return _op(obj.pid) + b"Q"
    if isinstance(obj, tuple):
        return b"(" + b"".join(map(_op, obj)) + b"t" if obj else b")"
    if isinstance(obj, list):
        return b"]" + (b"(" + b"".join(map(_op, obj)) + b"e" if obj else b"")
    if isinstance(obj, dict):
        return b"}" + (b"(" + b"".join(_op(k) + _op(v) for k, v in obj.items()) + b"u" if obj else b"")
    raise TypeError(type(obj))


def dumps(obj) -> bytes:
    return b"\x80\x02" + _op(obj) + b"."


def ordered_dict(items: dict, metadata: dict | None = None) -> Call:
    """An OrderedDict as pickle writes it; a state dict also carries `_metadata` as instance state."""
    state = None if metadata is None else {"_metadata": ordered_dict(metadata)}
    return Call(Global("collections", "OrderedDict"), (), state, items)


@dataclass
class Tensor:
    """One tensor of a fixture: a view (offset, size, stride) of storage `key`."""

    key: str
    offset: int
    size: tuple
    stride: tuple
    rebuild: str = "v2"  # "v2", "v3" (untyped storage + dtype) or "parameter"
    dtype_name: str = ""  # torch dtype name for v3
    view: tuple | None = None  # legacy view_metadata (view_key, offset, size)


def _tensor_op(t: Tensor, storage_type: str, numel: int, legacy: bool) -> Call:
    location = "cuda:0" if legacy else "cpu"
    stype = Global("torch.storage" if storage_type == "UntypedStorage" else "torch", storage_type)
    pid = ("storage", stype, t.key, location, numel) + ((t.view,) if legacy else ())
    hooks = ordered_dict({})
    if t.rebuild == "v3":
        return Call(Global("torch._utils", "_rebuild_tensor_v3"),
                    (PersId(pid), t.offset, t.size, t.stride, False, hooks, Global("torch", t.dtype_name)))
    tensor = Call(Global("torch._utils", "_rebuild_tensor_v2"), (PersId(pid), t.offset, t.size, t.stride, False, hooks))
    if t.rebuild == "parameter":
        return Call(Global("torch._utils", "_rebuild_parameter"), (tensor, True, ordered_dict({})))
    return tensor


def _main_pickle(tensors: dict[str, Tensor], storages: dict[str, tuple[str, np.ndarray]], legacy: bool):
    items = {name: _tensor_op(t, storages[t.key][0], storages[t.key][1].size, legacy) for name, t in tensors.items()}
    layers = {name.rpartition(".")[0] for name in tensors}
    return ordered_dict(items, metadata={"": {"version": 1}, **{layer: {"version": 1} for layer in sorted(layers)}})


def write_legacy(path: Path, storages: dict, tensors: dict, main=None, key_order=None) -> bytes:
    """torch <= 1.5 `_legacy_save`: magic, protocol, sys_info, main pickle, key list, raw storages."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out = [dumps(0x1950A86A20F9469CFC6C), dumps(1001), dumps(sys_info),
           dumps(main if main is not None else _main_pickle(tensors, storages, legacy=True))]
    keys = list(storages) if key_order is None else key_order
    out.append(dumps(keys))
    for key in keys:
        array = storages[key][1]
        out.append(struct.pack("<q", array.size) + array.astype(array.dtype.newbyteorder("<")).tobytes())
    data = b"".join(out)
    path.write_bytes(data)
    return data


def write_zip(path: Path, storages: dict, tensors: dict, main=None) -> bytes:
    """torch >= 1.6 `_save`: `<archive>/data.pkl`, `<archive>/data/<key>` raw bytes, stored uncompressed."""
    archive = path.stem
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        main = main if main is not None else _main_pickle(tensors, storages, legacy=False)
        zf.writestr(f"{archive}/data.pkl", dumps(main))
        zf.writestr(f"{archive}/byteorder", "little")
        for key, (_, array) in storages.items():
            zf.writestr(f"{archive}/data/{key}", array.astype(array.dtype.newbyteorder("<")).tobytes())
        zf.writestr(f"{archive}/version", "3\n")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


WRITERS = {"legacy": write_legacy, "zip": write_zip}


def test_writer_emits_valid_pickles():
    """The hand-written opcodes mean what the standard unpickler says they mean."""
    value = {"a": (1, -7, 300, 2**40, -(2**70), 0x1950A86A20F9469CFC6C), "b": [None, True, False, "é"], "c": {}}
    assert pickle.loads(dumps(value)) == value
    assert pickle.loads(dumps(ordered_dict({"x": 1}, metadata={"": {"version": 1}}))) == OrderedDict(x=1)


# --------------------------------------------------------------------------------------------
# Fixtures with fresh random arrays
# --------------------------------------------------------------------------------------------

def _seeded_rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    return np.random.default_rng(seed), seed


def _random_fixture(rng, fmt: str):
    """Storages, tensors and the arrays torch would rebuild, computed independently with NumPy."""
    def key():
        return str(rng.integers(10**9, 10**11)) if fmt == "legacy" else str(len(storages))

    storages, tensors, expected = {}, {}, {}

    def add(storage_type, array):
        k = key()
        storages[k] = (storage_type, np.ascontiguousarray(array).reshape(-1))
        return k

    shared = rng.standard_normal(40).astype(np.float32)
    k = add("FloatStorage", shared)
    tensors["shared.block"] = Tensor(k, 4, (3, 4), (4, 1))
    expected["shared.block"] = shared[4:16].reshape(3, 4)
    tensors["shared.transposed"] = Tensor(k, 16, (3, 4), (1, 3))  # a (4, 3) block's .t()
    expected["shared.transposed"] = shared[16:28].reshape(4, 3).T
    tensors["shared.expanded"] = Tensor(k, 30, (2, 3), (0, 1))  # .expand of a (1, 3) row
    expected["shared.expanded"] = np.broadcast_to(shared[30:33], (2, 3))
    tensors["shared.scalar"] = Tensor(k, 39, (), ())
    expected["shared.scalar"] = shared[39].reshape(())

    for name, storage_type, array in [
        ("w_l1.weight", "FloatStorage", rng.standard_normal((5, 7)).astype(np.float32)),
        ("f64.value", "DoubleStorage", rng.standard_normal(6)),
        ("f16.value", "HalfStorage", rng.standard_normal((2, 3)).astype(np.float16)),
        ("i64.value", "LongStorage", rng.integers(-2**62, 2**62, 4)),
        ("i32.value", "IntStorage", rng.integers(-2**31, 2**31, 3).astype(np.int32)),
        ("u8.value", "ByteStorage", rng.integers(0, 256, 5).astype(np.uint8)),
        ("bool.value", "BoolStorage", rng.random(4) < 0.5),
        ("empty.value", "FloatStorage", np.zeros((0, 3), np.float32)),
    ]:
        k = add(storage_type, array)
        stride = tuple(s // array.itemsize for s in array.strides) if array.size else (3, 1)
        tensors[name] = Tensor(k, 0, array.shape, stride)
        expected[name] = array

    if fmt == "legacy":  # storage views: legacy view_metadata (view_key, element offset, element count)
        root = rng.standard_normal(20).astype(np.float32)
        k = add("FloatStorage", root)
        tensors["view.value"] = Tensor(k, 2, (2, 3), (3, 1), view=(key(), 5, 10))
        expected["view.value"] = root[5:15][2:8].reshape(2, 3)
    else:  # torch >= 2.1: untyped bytes + explicit dtype, and a keep_vars Parameter
        values = rng.standard_normal(6).astype(np.float32)
        k = add("UntypedStorage", np.frombuffer(values.tobytes(), np.uint8))
        tensors["v3.float32"] = Tensor(k, 1, (2, 2), (2, 1), rebuild="v3", dtype_name="float32")
        expected["v3.float32"] = values[1:5].reshape(2, 2)
        u16 = rng.integers(0, 2**16, 3).astype(np.uint16)
        k = add("UntypedStorage", np.frombuffer(u16.tobytes(), np.uint8))
        tensors["v3.uint16"] = Tensor(k, 0, (3,), (1,), rebuild="v3", dtype_name="uint16")
        expected["v3.uint16"] = u16
        param = rng.standard_normal(3).astype(np.float32)
        k = add("FloatStorage", param)
        tensors["param.value"] = Tensor(k, 0, (3,), (1,), rebuild="parameter")
        expected["param.value"] = param
    return storages, tensors, expected


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_reads_exactly_what_was_written(tmp_path, fmt):
    rng, seed = _seeded_rng()
    storages, tensors, expected = _random_fixture(rng, fmt)
    path = tmp_path / ("evo_net.pkl" if fmt == "legacy" else "evo_net.pt")
    key_order = None
    if fmt == "legacy":  # the reader must follow the file's key list, whatever its order
        key_order = list(rng.permutation(list(storages)))
    WRITERS[fmt](path, storages, tensors, **({"key_order": key_order} if key_order else {}))

    got = read_torch_state_dict(path)

    assert isinstance(got, OrderedDict)
    assert list(got) == list(expected), f"seed {seed}"
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, f"{name}, seed {seed}"
        assert got[name].shape == want.shape, f"{name}, seed {seed}"
        np.testing.assert_array_equal(got[name], want, err_msg=f"{name}, seed {seed}")
        assert got[name].flags.writeable and got[name].flags.owndata, f"{name} must be a copy"


# --------------------------------------------------------------------------------------------
# Refusals and clear errors
# --------------------------------------------------------------------------------------------

def _simple(rng):
    array = rng.standard_normal((2, 3)).astype(np.float32)
    return {"0": ("FloatStorage", array.reshape(-1))}, {"w.weight": Tensor("0", 0, (2, 3), (3, 1))}


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
@pytest.mark.parametrize("evil", [Global("os", "system"), Global("posix", "system"), Global("builtins", "eval"),
                                  Global("subprocess", "call"), Global("torch", "load")])
def test_malicious_global_is_refused_and_never_called(tmp_path, fmt, evil):
    marker = tmp_path / "pwned"
    storages, tensors = _simple(np.random.default_rng(0))
    main = ordered_dict({"w.weight": Call(evil, (f"touch {marker}",))})
    path = tmp_path / "evil.pkl"
    WRITERS[fmt](path, storages, tensors, main=main)
    with pytest.raises(ValueError, match=f"refusing to load global '{evil.module}.{evil.name}'") as info:
        read_torch_state_dict(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_malicious_global_in_legacy_preamble_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(dumps(Call(Global("os", "system"), (f"touch {marker}",))))
    with pytest.raises(ValueError, match="refusing to load global 'os.system'"):
        read_torch_state_dict(path)
    assert not marker.exists()


def test_build_on_an_allowed_function_does_not_tamper_with_the_reader(tmp_path):
    """BUILD with slot state does setattr on its target; aimed at a rebuild function it must not stick
    (dropping `_rebuild_tensor_v3`'s default `metadata=None` would break every later v3 load)."""
    path = tmp_path / "tamper.pt"
    with zipfile.ZipFile(path, "w") as zf:  # v3 = _rebuild_tensor_v3; v3.__defaults__ = None; return {}
        zf.writestr("tamper/data.pkl", b"\x80\x02" + _op(Global("torch._utils", "_rebuild_tensor_v3"))
                    + _op((None, {"__defaults__": None})) + b"b0" + _op({}) + b".")
    with pytest.raises(ValueError):
        read_torch_state_dict(path)

    rng, seed = _seeded_rng()
    values = rng.standard_normal(3).astype(np.float32)
    storages = {"0": ("UntypedStorage", np.frombuffer(values.tobytes(), np.uint8))}
    write_zip(path, storages, {"v": Tensor("0", 0, (3,), (1,), rebuild="v3", dtype_name="float32")})
    np.testing.assert_array_equal(read_torch_state_dict(path)["v"], values, err_msg=f"seed {seed}")


def test_pickled_module_class_is_refused(tmp_path):
    """A legacy `torch.save(model)` carries ('module', cls, file, source) persistent ids."""
    storages, tensors = _simple(np.random.default_rng(0))
    main = ordered_dict({"m": PersId(("module", "Actor", "ddpg.py", "class Actor: ..."))})
    path = tmp_path / "model.pkl"
    write_legacy(path, storages, tensors, main=main)
    with pytest.raises(ValueError, match="refusing persistent id 'module'"):
        read_torch_state_dict(path)


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_truncated_file_gives_a_clear_error(tmp_path, fmt):
    storages, tensors = _simple(np.random.default_rng(1))
    full = WRITERS[fmt](tmp_path / "full.pkl", storages, tensors)
    cuts = [0, 1, 10, len(full) // 3, len(full) // 2, len(full) - 30, len(full) - 5, len(full) - 1]
    for cut in cuts:
        path = tmp_path / f"cut{cut}.pkl"
        path.write_bytes(full[:cut])
        with pytest.raises(ValueError, match="truncated|corrupt|not a PyTorch checkpoint") as info:
            read_torch_state_dict(path)
        assert str(path) in str(info.value), f"cut at {cut}"


def test_tensor_past_the_end_of_its_storage_is_refused(tmp_path):
    storages, _ = _simple(np.random.default_rng(2))
    path = tmp_path / "bad.pkl"
    write_legacy(path, storages, {"w.weight": Tensor("0", 2, (2, 3), (3, 1))})
    with pytest.raises(ValueError, match="past the end of its storage"):
        read_torch_state_dict(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        read_torch_state_dict(path)


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_nested_checkpoint_names_its_keys(tmp_path, fmt):
    storages, tensors = _simple(np.random.default_rng(3))
    inner = _main_pickle(tensors, storages, legacy=fmt == "legacy")
    path = tmp_path / "ckpt.pkl"
    WRITERS[fmt](path, storages, tensors, main={"state_dict": inner, "epoch": 3})
    with pytest.raises(ValueError, match=r"keys \['state_dict', 'epoch'\].*nested under \['state_dict'\]"):
        read_torch_state_dict(path)


# --------------------------------------------------------------------------------------------
# load_official_actor
# --------------------------------------------------------------------------------------------

def _actor(obs_dim=17, action_dim=6, hidden=(16, 12), seed=0):
    actor = make_actor(action_dim, NetworkConfig(actor_hidden=hidden))
    return actor, init_actor(jax.random.key(seed), actor, obs_dim)


def _write_state_dict(path: Path, state_dict, fmt: str):
    storages, tensors = {}, {}
    for i, (name, value) in enumerate(state_dict.items()):
        key = str(1000 + i)
        value = np.ascontiguousarray(value, np.float32)
        storages[key] = ("FloatStorage", value.reshape(-1))
        tensors[name] = Tensor(key, 0, value.shape, tuple(s // 4 for s in value.strides))
    WRITERS[fmt](path, storages, tensors)


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_load_official_actor_round_trip(tmp_path, fmt):
    rng, seed = _seeded_rng()
    actor, like = _actor()
    params = jax.tree.map(lambda x: np.asarray(x) + rng.standard_normal(x.shape).astype(np.float32), like)
    path = tmp_path / "evo_net.pkl"
    _write_state_dict(path, to_torch_state_dict(params), fmt)

    loaded = load_official_actor(path, like)

    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"seed {seed}")
    states = rng.standard_normal((4, 17)).astype(np.float32)
    # Exact: one compiled forward pass on device copies of bit-identical leaves (two separately
    # compiled or eagerly dispatched passes may round differently on some CPUs).
    forward = jax.jit(lambda p, s: apply_actor(actor, p, s))
    on_device = lambda tree: jax.tree.map(jnp.asarray, tree)
    np.testing.assert_array_equal(forward(on_device(loaded), states), forward(on_device(params), states))


def test_load_official_actor_shape_mismatch_is_a_config_error(tmp_path):
    _, params = _actor(obs_dim=11)  # e.g. a Hopper checkpoint loaded for a 17-dim task
    path = tmp_path / "evo_net.pkl"
    _write_state_dict(path, to_torch_state_dict(params), "legacy")
    _, like = _actor(obs_dim=17)
    with pytest.raises(ConfigError, match="--env") as info:
        load_official_actor(path, like)
    assert str(path) in str(info.value) and "actor_hidden" in str(info.value)


def test_load_official_actor_errors_are_config_errors(tmp_path):
    _, like = _actor()
    with pytest.raises(ConfigError, match="not found"):
        load_official_actor(tmp_path / "missing.pkl", like)
    path = tmp_path / "evil.pkl"
    storages, tensors = _simple(np.random.default_rng(0))
    write_zip(path, storages, tensors, main=Call(Global("os", "system"), ("true",)))
    with pytest.raises(ConfigError, match="os.system"):
        load_official_actor(path, like)


# --------------------------------------------------------------------------------------------
# Real torch-written files (tests/data/make_torch_fixtures.py)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["torch_actor_zip.pt", "torch_actor_legacy.pkl"])
def test_real_torch_fixtures(name):
    needed = [DATA / name, DATA / "torch_actor_expected.npz"]
    missing = [p.name for p in needed if not p.exists()]
    if missing:
        pytest.skip(f"torch-written fixtures {missing} absent; create them where torch is installed with "
                    "`python tests/data/make_torch_fixtures.py tests/data`")
    with np.load(DATA / "torch_actor_expected.npz") as npz:
        expected = {k: npz[k] for k in npz.files}

    got = read_torch_state_dict(DATA / name)

    assert list(got) == OFFICIAL_ACTOR_KEYS and sorted(expected) == sorted(OFFICIAL_ACTOR_KEYS)
    for key in OFFICIAL_ACTOR_KEYS:
        assert got[key].dtype == expected[key].dtype == np.float32, key
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)

    _, like = _actor(obs_dim=17, action_dim=6, hidden=(16, 12))
    params = load_official_actor(DATA / name, like)
    for layer in ("w_l1", "w_l2", "w_out"):
        np.testing.assert_array_equal(params[layer]["kernel"], expected[f"{layer}.weight"].T)
        np.testing.assert_array_equal(params[layer]["bias"], expected[f"{layer}.bias"])
    for layer in ("lnorm1", "lnorm2"):
        np.testing.assert_array_equal(params[layer]["gamma"], expected[f"{layer}.gamma"])
        np.testing.assert_array_equal(params[layer]["beta"], expected[f"{layer}.beta"])
