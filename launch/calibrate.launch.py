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

from typing import TYPE_CHECKING

from simreal_ros.bringup.graph import CALIBRATE_ARGS, build_calibrate_graph
from simreal_ros.bringup.launch_actions import launch_description

if TYPE_CHECKING:
    from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    return launch_description(CALIBRATE_ARGS, build_calibrate_graph)
