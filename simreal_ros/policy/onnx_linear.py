"""A linear ONNX policy, ``action = tanh(obs @ W + b) * gain``, written without torch or ``onnx``.

The robot install has ONNX Runtime but neither torch nor the ``onnx`` package, yet tests,
benches and ``simreal policy check`` demos need bundles whose model disagrees with a manifest
(another observation size, another number of outputs) or that are simply small and known.
This module encodes the ONNX protobuf (``ModelProto``) by hand: a ``MatMul``, an ``Add``, a
``Tanh`` and a ``Mul``, float32 weights as initializers, a dynamic batch axis -- the bundle
contract of :mod:`simreal_ros.policy.bundle`. ONNX Runtime loads it like any exported model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

_FLOAT = 1  # TensorProto.FLOAT
_IR_VERSION = 8
_OPSET = 17


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _int(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


def _bytes(field: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _key(field, 2) + _varint(len(data)) + data


def _tensor(name: str, arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype="<f4")
    dims = b"".join(_int(1, int(d)) for d in arr.shape)
    return dims + _int(2, _FLOAT) + _bytes(8, name) + _bytes(9, arr.tobytes())


def _value_info(name: str, dims: Sequence[int | str]) -> bytes:
    shape = b"".join(_bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d)) for d in dims)
    tensor_type = _int(1, _FLOAT) + _bytes(2, shape)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


def _node(op: str, inputs: Sequence[str], output: str) -> bytes:
    return b"".join(_bytes(1, i) for i in inputs) + _bytes(2, output) + _bytes(3, f"{op}_{output}") + _bytes(4, op)


def linear_onnx_bytes(weight: np.ndarray, bias: np.ndarray, gain: float = 1.0) -> bytes:
    """The serialized ONNX model ``obs [batch, in] -> action [batch, out]`` for ``weight [in, out]``."""
    weight = np.asarray(weight, dtype=np.float32)
    bias = np.asarray(bias, dtype=np.float32).ravel()
    if weight.ndim != 2 or bias.shape != (weight.shape[1],):
        raise ValueError(f"weight must be [in, out] and bias [out], got {weight.shape} and {bias.shape}")
    n_in, n_out = weight.shape
    graph = b"".join([
        _bytes(1, _node("MatMul", ["obs", "W"], "h")),
        _bytes(1, _node("Add", ["h", "b"], "z")),
        _bytes(1, _node("Tanh", ["z"], "t")),
        _bytes(1, _node("Mul", ["t", "gain"], "action")),
        _bytes(2, "linear_policy"),
        _bytes(5, _tensor("W", weight)),
        _bytes(5, _tensor("b", bias)),
        _bytes(5, _tensor("gain", np.array([gain], dtype=np.float32))),
        _bytes(11, _value_info("obs", ["batch", n_in])),
        _bytes(12, _value_info("action", ["batch", n_out])),
    ])
    opset = _bytes(1, "") + _int(2, _OPSET)
    return _int(1, _IR_VERSION) + _bytes(2, "simreal_ros.policy.onnx_linear") + _bytes(7, graph) + _bytes(8, opset)


def write_linear_onnx(path: str | Path, n_in: int, n_out: int, seed: int = 0, gain: float = 1.0) -> Path:
    """A random linear policy (weights N(0, 0.3^2)) written to ``path``."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.write_bytes(linear_onnx_bytes(rng.normal(0, 0.3, (n_in, n_out)), rng.normal(0, 0.3, n_out), gain))
    return path


def write_linear_bundle(directory: str | Path, robot, model_obs_dim: int | None = None, n_out: int | None = None,
                        seed: int = 0, gain: float = 1.0, **manifest_kw) -> Path:
    """A bundle with a random linear ONNX policy for ``robot`` (no torch needed).

    ``model_obs_dim``/``n_out`` make the model disagree with the manifest (to test refusals);
    other keyword arguments go to :func:`simreal_ros.policy.bundle.manifest_for`.
    """
    import yaml

    from simreal_ros.policy.bundle import MANIFEST_FILE, manifest_for
    from simreal_ros.policy.observation import DEFAULT_TERMS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    terms = tuple(manifest_kw.pop("terms", DEFAULT_TERMS))
    manifest = manifest_for(robot, manifest_kw.pop("name", "linear_policy"), "policy.onnx", terms,
                            provenance=manifest_kw.pop("provenance", {"tool": "write_linear_bundle", "seed": seed}),
                            **manifest_kw)
    write_linear_onnx(directory / "policy.onnx", model_obs_dim or manifest.obs_dim, n_out or manifest.action_dim, seed,
                      gain)
    (directory / MANIFEST_FILE).write_text(yaml.safe_dump(manifest.to_dict(), sort_keys=False, width=120))
    return directory

