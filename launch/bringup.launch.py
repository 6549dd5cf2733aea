"""Bring up the whole simreal_ros graph: ``ros2 launch simreal_ros bringup.launch.py mode:=sim``.

A thin adapter: the nodes, parameter files, overrides and remappings come from
``simreal_ros.bringup.graph`` (the same definition ``simreal sim`` runs), and the launch
arguments from its ``LAUNCH_ARGS``. The policy bundle's manifest sets the control rate of the
shield and the baseline (``control_period``, ``rate_hz``).

Arguments: mode:=sim|real  policy:=<bundle dir>  shield_mode:=active|shadow|blend|hold
record:=true|false  output_dir:=runs  timing:=paced|unpaced  randomization:=nominal|default|wide
seed:=0  real_driver_config:=<yaml>  view:=false|true (a Foxglove live view on ws://127.0.0.1:8765)
task:=reach|push  trigger:=estimate|timer  executor:=events|single_threaded
latent:=<0..N-1> (an exploration family's code; std_msgs/Int32 on /simreal/policy/latent switches it)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simreal_ros.bringup.graph import LAUNCH_ARGS, build_graph
from simreal_ros.bringup.launch_actions import launch_description

if TYPE_CHECKING:
    from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    return launch_description(LAUNCH_ARGS, build_graph)
