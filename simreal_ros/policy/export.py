"""Export a torch policy network to the bundle's model formats (needs torch; ``train`` extra).

The exported model follows the bundle contract: one float32 input ``obs`` of shape
``[batch, obs_dim]`` (dynamic batch) and one output ``action`` of shape ``[batch, n_joints]``.
Used by ``simreal train`` and by the tests (tiny random MLPs).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence


def export_onnx(module, obs_dim: int, path: str | Path, opset: int = 17) -> Path:
    """Write ``module`` (obs ``[batch, obs_dim]`` -> action) as ONNX with a dynamic batch axis."""
    import torch

    path = Path(path)
    module = module.eval()
    dummy = torch.zeros(1, int(obs_dim), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dynamo=False is deprecated; the dynamo exporter needs onnxscript
        torch.onnx.export(module, (dummy,), str(path), input_names=["obs"], output_names=["action"],
                          dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    return path


def export_torchscript(module, obs_dim: int, path: str | Path) -> Path:
    """Write ``module`` as TorchScript (``torch.jit.trace`` on a ``[1, obs_dim]`` input)."""
    import torch

    path = Path(path)
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(module, torch.zeros(1, int(obs_dim), dtype=torch.float32))
    traced.save(str(path))
    return path


def mlp(obs_dim: int, n_out: int, hidden: Sequence[int] = (64, 64), seed: int = 0):
    """A small random tanh MLP ``obs_dim -> hidden... -> n_out`` (for tests and benches)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    layers, last = [], int(obs_dim)
    for h in hidden:
        layers += [torch.nn.Linear(last, h), torch.nn.Tanh()]
        last = h
    layers.append(torch.nn.Linear(last, int(n_out)))
    net = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net.eval()


def write_random_bundle(directory: str | Path, robot, backend: str = "onnx", terms: Sequence[str] | None = None,
                        model_obs_dim: int | None = None, n_out: int | None = None, seed: int = 0,
                        hidden: Sequence[int] = (64, 64), **manifest_kw) -> Path:
    """A bundle with a random MLP for ``robot`` (tests, benches, ``simreal policy check`` demos).

    ``model_obs_dim``/``n_out`` make the model disagree with the manifest (to test refusals).
    Extra keyword arguments go to :func:`simreal_ros.policy.bundle.manifest_for`.
    """
    import yaml

    from simreal_ros.policy.bundle import MANIFEST_FILE, manifest_for
    from simreal_ros.policy.observation import DEFAULT_TERMS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_file = "policy.onnx" if backend == "onnx" else "policy.pt"
    manifest = manifest_for(robot, manifest_kw.pop("name", "random_policy"), model_file,
                            tuple(terms or DEFAULT_TERMS), backend=backend,
                            provenance=manifest_kw.pop("provenance", {"tool": "write_random_bundle", "seed": seed}),
                            **manifest_kw)
    obs_dim = model_obs_dim or manifest.obs_dim
    net = mlp(obs_dim, n_out or manifest.action_dim, hidden=hidden, seed=seed)
    (export_onnx if backend == "onnx" else export_torchscript)(net, obs_dim, directory / model_file)
    (directory / MANIFEST_FILE).write_text(yaml.safe_dump(manifest.to_dict(), sort_keys=False, width=120))
    return directory
