"""Bring up the whole simreal_ros graph: ``ros2 launch simreal_ros bringup.launch.py mode:=sim``.

A thin adapter: the nodes, parameter files, overrides and remappings come from
``simreal_ros.bringup.graph`` (the same definition ``simreal sim`` runs), and the launch
arguments from its ``LAUNCH_ARGS``. The policy bundle's manifest sets the control rate of the
shield and the baseline (``control_period``, ``rate_hz``).

Arguments: mode:=sim|real  policy:=<bundle dir>  shield_mode:=active|shadow|blend|hold
record:=true|false  output_dir:=runs  timing:=paced|unpaced  randomization:=nominal|default|wide
seed:=0  real_driver_config:=<yaml>  view:=false|true (a Foxglove live view on ws://127.0.0.1:8765)
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from launch import LaunchContext, LaunchDescription
from simreal_ros.bringup.graph import LAUNCH_ARGS, GraphOptions, build_graph


def _nodes(context: LaunchContext) -> list:
    opts = GraphOptions.from_strings({a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGS})
    actions = []
    for spec in build_graph(opts):
        kind = LifecycleNode if spec.lifecycle else Node
        actions.append(kind(
            package="simreal_ros",
            executable=spec.executable,
            name=spec.name,
            namespace="",
            parameters=[*(str(f) for f in spec.param_files), spec.parameters],
            remappings=list(spec.remappings),
            output="screen",
            emulate_tty=True,
        ))
    return actions


def generate_launch_description() -> LaunchDescription:
    declared = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description,
                                      **({"choices": list(a.choices)} if a.choices else {}))
                for a in LAUNCH_ARGS]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])


