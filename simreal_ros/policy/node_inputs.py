"""The executor the policy node runs, from the bundle and the node's parameters: refused at start
when the node's topics and ``latent`` parameter cannot provide an input the bundle observes (ROS-free)."""

from __future__ import annotations

from dataclasses import replace

from simreal_ros.policy.bundle import BundleError, PolicyBundle
from simreal_ros.policy.executor import ExecutorConfig, PolicyExecutor
from simreal_ros.robot import RobotModel


def missing_inputs(inputs, params) -> dict[str, str]:
    """The bundle's inputs (:attr:`PolicyExecutor.inputs`) the policy node cannot provide with its
    parameters ``params`` (its topics and ``latent``), with why."""
    topics = {"joint_state": "state_topic", "goal": "goal_topic", "object_pose": "object_topic"}
    out = {}
    for name in inputs:
        if name == "latent":
            if params.get("latent", -1) < 0:
                out[name] = "parameter 'latent' is not set (-1): give the exploration policy's code, 0..N-1"
            continue
        key = topics.get(name)
        if key is None:
            out[name] = f"the policy node has no {name} subscription"
        elif not params[key]:
            out[name] = f"parameter '{key}' is empty"
    return out


def node_executor(bundle: PolicyBundle, robot: RobotModel, config: ExecutorConfig, params, where) -> PolicyExecutor:
    """The executor the policy node runs: ``config`` with its compute deadline as
    ``deadline_fraction`` of the bundle's period, and the exploration code ``params['latent']``
    (``where``: the bundle path the errors name).

    Raises:
        BundleError: the node's parameters ``params`` cannot provide an input the bundle's
            observation needs (:func:`missing_inputs`), or its latent code is out of range.
    """
    m = bundle.manifest
    period = 1.0 / m.control_rate_hz
    ex = PolicyExecutor(bundle, robot, replace(config, compute_deadline=config.deadline_fraction * period))
    missing = missing_inputs(ex.inputs, params)
    if missing:
        raise BundleError(f"policy '{m.name}' ({where}) observes {', '.join(missing)}, which this node cannot "
                          f"provide: {'; '.join(missing.values())}")
    if ex.latent_size is not None:
        try:
            ex.set_latent(params["latent"])
        except ValueError as exc:
            raise BundleError(f"policy '{m.name}' ({where}): parameter 'latent' = {params['latent']}: {exc}") from None
    return ex
