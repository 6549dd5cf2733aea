"""The launch files' one piece of logic: declare the arguments, build the graph, start its nodes.

``launch/bringup.launch.py`` and ``launch/calibrate.launch.py`` call :func:`launch_description`
with their argument list and graph builder; ``launch``/``launch_ros`` are imported only here
and only when a launch file runs (they exist only in a full ROS 2 install).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from launch import LaunchDescription


def launch_description(args: Sequence, build: Callable) -> LaunchDescription:
    """A ``LaunchDescription`` declaring ``args`` (:class:`~simreal_ros.bringup.graph.LaunchArg`)
    whose nodes are ``build(GraphOptions)`` of the values given, lifecycle nodes as such."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode, Node

    from launch import LaunchDescription
    from simreal_ros.bringup.graph import GraphOptions

    def nodes(context) -> list:
        opts = GraphOptions.from_strings({a.name: LaunchConfiguration(a.name).perform(context) for a in args})
        actions = []
        for spec in build(opts):
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

    declared = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description,
                                      **({"choices": list(a.choices)} if a.choices else {}))
                for a in args]
    return LaunchDescription([*declared, OpaqueFunction(function=nodes)])
