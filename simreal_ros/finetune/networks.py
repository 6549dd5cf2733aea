"""The bundle's network as weights, the frozen reference as a torch function, the new actor as ONNX.

A bundle's ONNX model is deterministic (for a PPO policy: the Gaussian's mean), and the SB3
weights are not shipped; but the ONNX file holds the network itself. :func:`read_mlp` reads a
plain MLP back from its graph (``Gemm`` layers with ``Tanh``/``Relu`` between them, anything after
the last ``Gemm`` that leaves its output as the model's: SB3's export adds a zero-noise term) and
checks it against ONNX Runtime on random inputs, so the fine-tuned actor starts from exactly these
weights. A graph that is not such an MLP gives ``None`` (the caller then distils the reference by
behaviour cloning and says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ACTIVATIONS = {"Tanh": "tanh", "Relu": "relu"}


@dataclass
class Mlp:
    weights: list[np.ndarray]  # (out, in) per layer
    biases: list[np.ndarray]
    activation: str  # between layers: tanh | relu

    @property
    def hidden(self) -> list[int]:
        return [int(w.shape[0]) for w in self.weights[:-1]]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        f = np.tanh if self.activation == "tanh" else (lambda v: np.maximum(v, 0.0))
        h = np.asarray(x, dtype=np.float64)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T.astype(np.float64) + b
            if i < len(self.weights) - 1:
                h = f(h)
        return h


def read_mlp(onnx_path: str | Path, infer, obs_dim: int, seed: int = 0) -> tuple[Mlp | None, str]:
    """The MLP in ``onnx_path`` and why not when it is none. ``infer`` is the bundle's ONNX Runtime
    call; the MLP must give its outputs within 1e-4 on 256 random normalized observations."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights, biases, acts = [], [], []
    for node in model.graph.node:
        if node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if len(node.input) < 3 or node.input[1] not in init or node.input[2] not in init \
                    or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
                return None, f"Gemm node {node.name!r} is not a plain dense layer"
            w = init[node.input[1]]
            weights.append(w if attrs.get("transB", 0) else w.T)
            biases.append(init[node.input[2]].reshape(-1))
        elif node.op_type in ACTIVATIONS and weights and len(acts) < len(weights):
            acts.append(ACTIVATIONS[node.op_type])
    if not weights:
        return None, "no dense (Gemm) layer in the graph"
    if len(acts) != len(weights) - 1 or len(set(acts)) > 1:
        return None, f"activations {acts} between {len(weights)} dense layers are not one kind between each pair"
    mlp = Mlp([np.asarray(w, np.float32) for w in weights], [np.asarray(b, np.float32) for b in biases],
              acts[0] if acts else "tanh")
    x = np.random.default_rng(seed).normal(0.0, 2.0, (256, obs_dim)).astype(np.float32)
    err = float(np.max(np.abs(mlp(x) - np.asarray(infer(x), dtype=np.float64))))
    if not err < 1e-4:
        return None, f"the dense layers read from the graph differ from ONNX Runtime's output by {err:.2g}"
    return mlp, f"{len(weights)} dense layers {mlp.hidden} ({mlp.activation}), equal to ONNX Runtime within {err:.1g}"


class Reference:
    """The frozen original: its own ONNX model through ONNX Runtime, clipped to its action clip and
    divided by it (actions in [-1, 1]), as a torch function without gradients."""

    def __init__(self, bundle: Any) -> None:
        self.bundle = bundle
        self.clip = float(bundle.manifest.action_clip)

    def numpy(self, obs_normalized: np.ndarray) -> np.ndarray:
        raw = np.asarray(self.bundle.infer(np.asarray(obs_normalized, dtype=np.float32)), dtype=np.float64)
        return np.clip(raw, -self.clip, self.clip) / self.clip

    def __call__(self, obs):
        import torch

        with torch.no_grad():
            return torch.as_tensor(self.numpy(obs.detach().cpu().numpy()), dtype=torch.float32, device=obs.device)


def load_actor_weights(policy, mlp: Mlp) -> None:
    """Copy ``mlp`` into a d3rlpy ``DeterministicPolicy`` built with the same hidden sizes and activation."""
    import torch

    copy_into([m for m in policy._encoder._layers if isinstance(m, torch.nn.Linear)] + [policy._fc], mlp)


def copy_into(linears: list, mlp: Mlp) -> None:
    """Copy ``mlp``'s dense layers into the torch ``Linear`` layers ``linears`` (same shapes, in order)."""
    import torch

    if [tuple(m.weight.shape) for m in linears] != [tuple(w.shape) for w in mlp.weights]:
        raise ValueError(f"actor layers {[tuple(m.weight.shape) for m in linears]} differ from the bundle's "
                         f"{[tuple(w.shape) for w in mlp.weights]}")
    with torch.no_grad():
        for m, w, b in zip(linears, mlp.weights, mlp.biases):
            m.weight.copy_(torch.tensor(np.array(w)))
            m.bias.copy_(torch.tensor(np.array(b)))


def export_actor(policy, obs_dim: int, action_clip: float, path: str | Path) -> Path:
    """Write the d3rlpy actor as the bundle's ONNX model: normalized obs -> ``action_clip * tanh(mu)``."""
    import copy

    import torch

    from simreal_ros.policy.export import export_onnx

    class Actor(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = copy.deepcopy(policy).cpu().eval()
            self.clip = float(action_clip)

        def forward(self, obs):
            return self.clip * self.policy(obs).squashed_mu

    return export_onnx(Actor(), obs_dim, path)


def write_scaled_bundle(src: str | Path, dst: str | Path, scale: float, name: str | None = None) -> Path:
    """A copy of bundle ``src`` at ``dst`` whose ONNX output layer (the last ``Gemm``: weights and
    bias) is multiplied by ``scale``: the same policy, ``scale`` times as eager (a deliberately worse
    policy for checking an off-policy estimate; ``scale`` 1 is the original). The manifest is the
    original's with ``name`` (default ``<name>_x<scale>``); ``provenance.derived`` says how it was made."""
    import shutil

    import onnx
    import yaml
    from onnx import numpy_helper

    from simreal_ros.policy.bundle import MANIFEST_FILE, read_manifest

    manifest, directory = read_manifest(src)
    dst = Path(dst)
    shutil.copytree(directory, dst)
    path = dst / manifest.model_file
    model = onnx.load(str(path))
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    if not gemms:
        raise ValueError(f"{path}: no dense (Gemm) layer to scale")
    init = {t.name: t for t in model.graph.initializer}
    for tensor_name in gemms[-1].input[1:3]:
        t = init[tensor_name]
        t.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(t) * scale).astype(np.float32), tensor_name))
    onnx.save(model, str(path))
    data = manifest.to_dict()
    data["name"] = name or f"{manifest.name}_x{scale:g}"
    data["provenance"] = {**data.get("provenance", {}), "derived": {
        "from": str(directory), "how": f"output layer scaled by {scale:g} (simreal_ros.finetune.networks)"}}
    (dst / MANIFEST_FILE).write_text(yaml.safe_dump(data, sort_keys=False, width=120))
    return dst
