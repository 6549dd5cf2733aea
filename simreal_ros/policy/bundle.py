"""Policy bundles: a model file plus a manifest that states everything the model assumes.

A bundle is a directory holding ``manifest.yaml`` and the model (ONNX or TorchScript)::

    format: simreal_policy/1
    name: reach_default
    model: {file: policy.onnx, backend: onnx}            # or {file: policy.pt, backend: torchscript}
    robot: {name: panda, joint_names: [panda_joint1, ...]}
    control_rate_hz: 20.0
    observation:
      terms: [{name: joint_pos, size: 7}, ...]            # simreal_ros.policy.observation.TERMS
      normalization: {mean: [...], std: [...], clip: 10.0}
    action: {type: joint_position_delta, scale: 0.05, clip: 1.0}
    default_pose: [...]
    provenance: {training: {...}, randomization: {...}, seed: 0, evaluation: {...}, created: ..., tool: ...}

The model takes one float32 input ``[batch, obs_dim]`` -- the observation normalised as
``clip((obs - mean) / std, -clip, clip)`` -- and gives one output ``[batch, n_joints]``, the
raw action before clipping and scaling (see :mod:`simreal_ros.policy.action`).

Loading reads the manifest as bounded YAML (size, depth, node count, no aliases: see
:mod:`simreal_ros.policy.manifest_yaml`), checks every key (types, sizes before any array is
built; errors name the key), keeps the model file inside the bundle directory, checks the
manifest's robot name, joints and default pose against the robot, and the model's
input/output shapes against the manifest; a mismatch raises :class:`BundleError` naming both
sides, so a wrong policy never starts.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from simreal_ros.policy.manifest import (  # re-exported: the bundle API
    BACKENDS,
    FORMAT,
    BundleError,
    PolicyManifest,
    _err,
    manifest_for,
)
from simreal_ros.policy.manifest_yaml import ManifestYamlError, load_manifest_yaml, short_repr
from simreal_ros.robot import RobotModel

MANIFEST_FILE = "manifest.yaml"

__all__ = ["BACKENDS", "FORMAT", "MANIFEST_FILE", "BundleError", "PolicyBundle", "PolicyManifest", "check_robot",
           "content_hash", "load_bundle", "manifest_for", "read_manifest", "save_bundle"]


def check_robot(manifest: PolicyManifest, robot: RobotModel) -> None:
    """Refuse a manifest whose robot name, joints (names, order) or default pose do not fit ``robot``."""
    if manifest.robot_name != robot.name:
        raise BundleError(f"manifest key 'robot.name': policy '{manifest.name}' is for robot "
                          f"{short_repr(manifest.robot_name)} but this robot is '{robot.name}'")
    if list(manifest.joint_names) != list(robot.joint_names):
        same_set = sorted(manifest.joint_names) == sorted(robot.joint_names)
        how = "same joints in a different order" if same_set else "different joints"
        raise BundleError(f"policy '{manifest.name}' joint_names {list(manifest.joint_names)} do not match robot "
                          f"'{robot.name}' joints {list(robot.joint_names)} ({how}); the policy's joint order "
                          "must equal the robot's")
    lim = robot.limits
    out = (manifest.default_pose < lim.position_min) | (manifest.default_pose > lim.position_max)
    if np.any(out):
        bad = [robot.joint_names[i] for i in np.flatnonzero(out)]
        raise BundleError(f"policy '{manifest.name}' default_pose {manifest.default_pose.tolist()} is outside "
                          f"robot '{robot.name}' position limits at {bad}")


@dataclass
class PolicyBundle:
    """A loaded bundle: manifest, where it lives, and (when loaded) the model backend."""

    manifest: PolicyManifest
    directory: Path
    backend: Any = None  # simreal_ros.policy.backends.Backend

    @property
    def model_path(self) -> Path:
        """The model file, checked to lie inside the bundle directory after following symlinks
        (a manifest must not make the robot load, or a report print, a file from elsewhere)."""
        path = self.directory / self.manifest.model_file
        root = self.directory.resolve()
        try:
            real = path.resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise _err("model.file", f"'{self.manifest.model_file}' cannot be resolved in {self.directory}: "
                                     f"{exc}") from exc
        if not real.is_relative_to(root):
            raise _err("model.file", f"'{self.manifest.model_file}' resolves to {real}, outside the bundle "
                                     f"directory {root} (a symlink leading out); the model must be a file inside it")
        return path

    def infer(self, obs_normalized: np.ndarray) -> np.ndarray:
        """Raw action(s) for normalised observation(s) ``[obs_dim]`` or ``[batch, obs_dim]``."""
        if self.backend is None:
            raise BundleError(f"bundle '{self.manifest.name}' was loaded without its model (load_model=False)")
        return self.backend(obs_normalized)


def read_manifest(path_or_dir: str | Path) -> tuple[PolicyManifest, Path]:
    """Parse ``manifest.yaml`` of a bundle directory (or the manifest path itself).

    The file is read as bounded YAML (:mod:`simreal_ros.policy.manifest_yaml`: size, depth,
    node count, no aliases) before the manifest's keys are checked; every refusal is a
    :class:`BundleError` naming the file and the key or line.
    """
    path = Path(path_or_dir)
    mpath = path / MANIFEST_FILE if path.is_dir() else path
    if not mpath.is_file():
        raise BundleError(f"no policy bundle at {path}: {mpath} does not exist")
    try:
        data = load_manifest_yaml(mpath)
    except ManifestYamlError as exc:
        raise BundleError(str(exc)) from exc
    try:
        manifest = PolicyManifest.from_dict(data)
    except BundleError as exc:
        raise BundleError(f"{mpath}: {exc}") from exc
    return manifest, mpath.parent


def load_bundle(path_or_dir: str | Path, robot: RobotModel | None = None, load_model: bool = True,
                warmup: int = 20) -> PolicyBundle:
    """Load and check a bundle; raise :class:`BundleError` naming both sides of any mismatch.

    Args:
        path_or_dir: bundle directory (or its ``manifest.yaml``).
        robot: when given, the manifest's joints and default pose are checked against it.
        load_model: also load the model backend and check its shapes against the manifest.
        warmup: inference calls made at load (the first calls are slow).
    """
    manifest, directory = read_manifest(path_or_dir)
    if robot is not None:
        check_robot(manifest, robot)
    bundle = PolicyBundle(manifest=manifest, directory=directory)
    try:
        model_path = bundle.model_path
    except BundleError as exc:
        raise BundleError(f"{directory / MANIFEST_FILE}: {exc}") from exc
    if not model_path.is_file():
        raise BundleError(f"{directory / MANIFEST_FILE}: model.file '{manifest.model_file}' does not exist "
                          f"({model_path})")
    if load_model:
        from simreal_ros.policy.backends import make_backend

        bundle.backend = make_backend(bundle, warmup=warmup)
    return bundle


def content_hash(bundle: PolicyBundle) -> str:
    """sha256 over the bundle's manifest file and model file (names and bytes): the identity a
    recorded session and a dataset name a bundle by."""
    h = hashlib.sha256()
    for path in (bundle.directory / MANIFEST_FILE, bundle.model_path):
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def save_bundle(directory: str | Path, manifest: PolicyManifest, model_file: str | Path) -> Path:
    """Write a bundle: copy ``model_file`` to ``<directory>/<manifest.model_file>`` and write the manifest.

    Returns the bundle directory. The result is loaded back (model included) to check it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    src, dst = Path(model_file), directory / manifest.model_file
    if not src.is_file():
        raise BundleError(f"model file {src} does not exist")
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    (directory / MANIFEST_FILE).write_text(yaml.safe_dump(manifest.to_dict(), sort_keys=False, width=120))
    load_bundle(directory, warmup=1)
    return directory
