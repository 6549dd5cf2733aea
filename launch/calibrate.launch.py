"""Record an identification session: ``ros2 launch simreal_ros calibrate.launch.py mode:=real``.

A thin adapter: the nodes, parameter files, overrides and remappings come from
``simreal_ros.bringup.graph.build_calibrate_graph`` (the same definition ``simreal calibrate
record`` runs in simulation), the launch arguments from its ``CALIBRATE_ARGS``. The excitation
controller proposes through the shield (active, every limit, e-stop, watchdogs) in place of the
policy and the baseline; the recorder writes the bag that ``simreal calibrate fit`` reads.

Arguments: mode:=sim|real  duration:=30  output_dir:=runs  timing:=paced|unpaced
randomization:=nominal|default|wide|<file>  seed:=0  real_arm:=<yaml> (sim)  real_driver_config:=<yaml> (real)
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from launch import LaunchContext, LaunchDescription
from simreal_ros.bringup.graph import CALIBRATE_ARGS, GraphOptions, build_calibrate_graph


def _nodes(context: LaunchContext) -> list:
    opts = GraphOptions.from_strings({a.name: LaunchConfiguration(a.name).perform(context) for a in CALIBRATE_ARGS})
    actions = []
    for spec in build_calibrate_graph(opts):
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
                for a in CALIBRATE_ARGS]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
