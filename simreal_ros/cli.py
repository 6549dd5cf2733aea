"""The ``simreal`` command line. Subcommands register themselves in :data:`COMMANDS`."""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

#: subcommand -> (module with ``add_arguments(parser)`` and ``run(args) -> int``, one-line help).
#: A subcommand whose module is not part of this install is left out of ``--help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "robot": ("simreal_ros.robot.cli", "show the robot description: joints, limits, ready pose, FK"),
    "sim": ("simreal_ros.bringup.cli", "run the whole stack in simulation (shipped policy), record a bag"),
    "explore": ("simreal_ros.bringup.explore", "run an exploration family (simreal train --explore N) through the "
                "graph, the latent cycled per episode, every session recorded"),
    "train": ("simreal_ros.training.train", "train a reaching policy in the randomized sim, export a bundle"),
    "evaluate": ("simreal_ros.training.evaluate", "evaluate a policy bundle against the baseline controller"),
    "policy": ("simreal_ros.policy.cli", "check a policy bundle against the robot (offline checks)"),
    "bag": ("simreal_ros.bag.cli", "inspect and recover recorded bags"),
    "estimate": ("simreal_ros.estimator.cli", "score the state estimator and friction/payload belief in the sim"),
    "calibrate": ("simreal_ros.calibrate.cli", "record an excitation session, fit the simulator to recorded bags"),
    "dataset": ("simreal_ros.dataset.cli", "turn recorded sessions into a Minari offline-RL dataset"),
    "finetune": ("simreal_ros.finetune.finetune", "improve a policy bundle from logged datasets (d3rlpy TD3+BC or "
                 "SB3 PPO in the calibrated sim, frozen reference)"),
    "ope": ("simreal_ros.finetune.ope", "off-policy evaluation of a bundle on logged datasets (FQE, shield replay)"),
    "promote": ("simreal_ros.rollout.cli", "move a policy bundle one rollout stage when its evidence meets the criteria"),
    "loop": ("simreal_ros.loop.cycle", "the whole cycle in simulation: session, dataset, calibrate, finetune, ope, "
             "promote, evaluate"),
}


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):  # the subcommand's own module is absent
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simreal", description="simreal_ros: sim-to-real for a Franka-style arm")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        mod = _module(module)
        if mod is None:
            continue
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        mod.add_arguments(p)
    return parser


def standalone_main(name: str, module: ModuleType, argv: list[str] | None = None, *, keep_argv: bool = False) -> int:
    """``main(argv)`` of the subcommand module ``module`` run on its own (``python -m ...``): a parser
    ``simreal NAME`` described by the module docstring's first line, the module's ``add_arguments``
    and ``run``. ``keep_argv``: the arguments (``sys.argv[1:]`` when ``argv`` is None) are also given
    to ``run`` as ``args.argv`` (the command a provenance records)."""
    p = argparse.ArgumentParser(prog=f"simreal {name}", description=module.__doc__.splitlines()[0])
    module.add_arguments(p)
    if keep_argv:
        argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if keep_argv:
        args.argv = argv
    return module.run(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
