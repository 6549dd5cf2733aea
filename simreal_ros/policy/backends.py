"""Inference backends for policy bundles: ONNX Runtime (default) and TorchScript (torch optional).

Both take a normalised float32 observation ``[obs_dim]`` (or a batch ``[batch, obs_dim]``)
and return the raw action ``[n_joints]`` (or ``[batch, n_joints]``) as float32. Each backend
checks the model's input/output shapes against the manifest at load and warms up.

ONNX Runtime runs with one intra-op and one inter-op thread and sequential execution: its
default thread pool spins on every core, which a control loop sharing the machine cannot afford.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from simreal_ros.policy.bundle import BundleError

if TYPE_CHECKING:  # pragma: no cover
    from simreal_ros.policy.bundle import PolicyBundle


class Backend(Protocol):
    name: str

    def __call__(self, obs: np.ndarray) -> np.ndarray: ...


def _dim_text(d) -> str:
    return str(d) if isinstance(d, int) else f"'{d}' (dynamic)"


def _as_batch(obs: np.ndarray, obs_dim: int) -> tuple[np.ndarray, bool]:
    x = np.asarray(obs, dtype=np.float32)
    single = x.ndim == 1
    if single:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != obs_dim:
        raise ValueError(f"observation has shape {np.shape(obs)}, expected [{obs_dim}] or [batch, {obs_dim}]")
    return np.ascontiguousarray(x), single


class OnnxBackend:
    """ONNX Runtime session on the CPU, one thread, warmed up.

    Args:
        path: ``.onnx`` file. obs_dim, n_joints: what the manifest says the model takes/gives
            (``n_joints`` is the action size: the joints, or 2 for planar tool actions).
        warmup: number of inference calls made at construction.
    """

    name = "onnx"

    def __init__(self, path: str | Path, obs_dim: int, n_joints: int, warmup: int = 20) -> None:
        import onnxruntime as ort

        self.obs_dim, self.n_joints = int(obs_dim), int(n_joints)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types for a bad file
            raise BundleError(f"cannot load ONNX model {path}: {exc}") from exc
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1 or len(outs) != 1:
            raise BundleError(f"ONNX model {path} has {len(ins)} inputs and {len(outs)} outputs "
                              f"({[i.name for i in ins]} -> {[o.name for o in outs]}); the policy contract is "
                              "one input [batch, obs_dim] and one output [batch, n_joints]")
        self._check(path, "input", ins[0], self.obs_dim, "observation size (sum of observation.terms sizes)")
        self._check(path, "output", outs[0], self.n_joints, "action size (number of robot.joint_names; 2 for "
                    "tool_planar_delta)")
        if ins[0].type != "tensor(float)":
            raise BundleError(f"ONNX model {path} input '{ins[0].name}' is {ins[0].type}; the policy contract is "
                              "float32 (tensor(float))")
        self.input_name, self.output_name = ins[0].name, outs[0].name
        _probe(self, path, warmup)

    @staticmethod
    def _check(path, side: str, arg, expected: int, what: str) -> None:
        shape = list(arg.shape)
        if len(shape) != 2:
            raise BundleError(f"ONNX model {path} {side} '{arg.name}' has shape {shape}; the manifest needs "
                              f"[batch, {expected}] ({what})")
        if isinstance(shape[1], int) and shape[1] != expected:
            raise BundleError(f"ONNX model {path} {side} '{arg.name}' has shape [{_dim_text(shape[0])}, {shape[1]}] "
                              f"but the manifest's {what} is {expected}")

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x, single = _as_batch(obs, self.obs_dim)
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return out[0] if single else out


class TorchScriptBackend:
    """TorchScript module on the CPU (``torch.jit.load``); torch is imported only here.

    Sets torch's intra-op threads to one (process-wide) for the same reason as ORT.
    """

    name = "torchscript"

    def __init__(self, path: str | Path, obs_dim: int, n_joints: int, warmup: int = 20) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BundleError(f"the bundle's model {path} is TorchScript (model.backend: torchscript) but torch is "
                              "not installed; install the 'train' extra (pip install torch==2.13.0) or export the "
                              "policy to ONNX (model.backend: onnx)") from exc
        self._torch = torch
        self.obs_dim, self.n_joints = int(obs_dim), int(n_joints)
        torch.set_num_threads(1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # jit.load: still the way to run .pt files
                self.module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/ValueError for bad files
            raise BundleError(f"cannot load TorchScript model {path}: {exc}") from exc
        _probe(self, path, warmup)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x, single = _as_batch(obs, self.obs_dim)
        with self._torch.inference_mode():
            out = self.module(self._torch.from_numpy(x)).numpy()
        return out[0] if single else out


def _last_line(exc: BaseException) -> str:
    """TorchScript errors carry a long traceback; its last line says what failed."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _probe(backend, path, warmup: int) -> None:
    """Run batches of 1 and 2 through the model; check the output shape; warm up."""
    for batch in (1, 2):
        try:
            out = backend(np.zeros((batch, backend.obs_dim), dtype=np.float32))
        except Exception as exc:  # noqa: BLE001 - report whatever the runtime says, with the contract
            raise BundleError(f"{backend.name} model {path} fails on an input of shape [{batch}, {backend.obs_dim}] "
                              f"(the manifest's observation size): {_last_line(exc)}") from exc
        out = np.asarray(out)
        if out.shape != (batch, backend.n_joints):
            raise BundleError(f"{backend.name} model {path} gives output shape {list(out.shape)} for input "
                              f"[{batch}, {backend.obs_dim}] but the manifest's action size (robot.joint_names, "
                              f"or 2 for planar) is {backend.n_joints} (expected [{batch}, {backend.n_joints}])")
        if out.dtype != np.float32:
            raise BundleError(f"{backend.name} model {path} gives {out.dtype} output; the contract is float32")
    x = np.zeros(backend.obs_dim, dtype=np.float32)
    for _ in range(max(0, warmup)):
        backend(x)


def make_backend(bundle: PolicyBundle, warmup: int = 20) -> Backend:
    """The backend the bundle's manifest names, loaded, checked and warmed up."""
    m = bundle.manifest
    cls = {"onnx": OnnxBackend, "torchscript": TorchScriptBackend}.get(m.backend)
    if cls is None:
        raise BundleError(f"manifest key 'model.backend': '{m.backend}' is not one of ['onnx', 'torchscript']")
    return cls(bundle.model_path, m.obs_dim, m.action_dim, warmup=warmup)
