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
