"""ament_python package; also a plain pip package (``pip install -e .[ros,train,test,scale,view]``)."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "simreal_ros"


def tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries that install ``folder`` (recursively) under share/<package>/."""
    out: dict[str, list[str]] = {}
    for path in glob(f"{folder}/**/*", recursive=True):
        if os.path.isfile(path) and "__pycache__" not in path:
            out.setdefault(f"share/{PACKAGE}/{os.path.dirname(path)}", []).append(path)
    return sorted(out.items())


ROS_WHEELS = [
    # ROS 2 Kilted as PyPI wheels, for machines without a ROS install. On a robot with ROS 2
    # from apt, do not install this extra: the system rclpy is used.
    "ros-rclpy>=9.1,<10",
    "ros-rmw-fastrtps-cpp>=9.3,<10",
    "ros-sensor-msgs>=5.5,<6",
    "ros-std-msgs>=5.5,<6",
    "ros-std-srvs>=5.5,<6",
    "ros-geometry-msgs>=5.5,<6",
    "ros-trajectory-msgs>=5.5,<6",
    "ros-diagnostic-msgs>=5.5,<6",
    "ros-rosgraph-msgs>=2.3,<3",
    "ros-lifecycle-msgs>=2.3,<3",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *tree("launch"),
        *tree("config"),
        *tree("urdf"),
        *tree("policies"),
    ],
    python_requires=">=3.10",
    install_requires=[
        "setuptools",
        "numpy>=1.24",
        "pyyaml>=6",
        "transforms3d>=0.4.1",
        "mujoco>=3.2",
        "onnxruntime>=1.17",
        "gymnasium>=1.0",
        "rosbags>=0.10",
        "mcap>=1.1",  # the bag writer and crash recovery
        "tqdm>=4.60",
        "ruckig>=0.12",  # jerk-limited online trajectory generation (baseline controller)
    ],
    extras_require={
        "ros": ROS_WHEELS,
        "train": [
            # torch as a range that the locally available CPU wheel (2.13.0) satisfies;
            # install that wheel first (`pip install torch==2.13.0`), see README.
            "torch>=2.3,<=2.13.0",
            "stable-baselines3>=2.3",
            "onnx>=1.15",
            "matplotlib>=3.7",
            "imageio>=2.30",
        ],
        "test": [
            "pytest>=7",
            "pytest-timeout>=2",
            "hypothesis>=6.100",
            "mcap-ros2-support>=0.5",
            "ruff>=0.5",
            "websockets==17.4",  # the Foxglove WebSocket client of the live-view test
            "mujoco[sysid]==4.0.0",  # the calibration tests fit with mujoco.sysid
            "minari[hdf5]==0.5.4",  # the dataset tests open what simreal dataset writes
        ],
        # Scale-out: evaluation episodes and training rollouts as Ray tasks/actors (--ray)
        "scale": ["ray==2.60.0"],
        # Live view: a Foxglove WebSocket server (simreal sim --view, view:=true)
        "view": ["foxglove-sdk==0.30.3"],
        # Calibration (simreal calibrate fit): MuJoCo's system-identification toolbox and its
        # optional dependencies (scipy, absl-py, plotly, tabulate, ...)
        "calibrate": ["mujoco[sysid]==4.0.0"],
        # Learning from recorded sessions (simreal dataset): Minari, the offline-RL dataset
        # format (HDF5 storage); 0.5.4 installs beside gymnasium 1.4
        "learn": ["minari[hdf5]==0.5.4"],
        # Fine-tuning and off-policy evaluation (simreal finetune, simreal ope): d3rlpy 2.8.1 itself is
        # installed with `pip install --no-deps d3rlpy==2.8.1 gym==0.26.2` (./run does): it pins
        # gymnasium==1.0.0, which would downgrade our gymnasium 1.4.0, and runs with 1.4.0 (tested);
        # gym 0.26.2 only for its imports (no gym-notices: it prints a banner on import). These are
        # its other runtime dependencies, pinned. Needs the train extra (torch, onnx).
        "finetune": ["h5py==3.16.0", "structlog==26.1.0", "dataclasses-json==0.6.7", "marshmallow==3.26.2",
                     "scikit-learn==1.9.1", "cloudpickle>=1.2", "minari[hdf5]==0.5.4"],
    },
    zip_safe=True,
    maintainer="simreal_ros developers",
    maintainer_email="dev@simreal-ros.local",
    description="Sim-to-real deployment of RL policies on a Franka-style arm with ROS 2.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "simreal = simreal_ros.cli:main",
            "sim_bridge = simreal_ros.nodes.sim_bridge_node:main",
            "state_estimator = simreal_ros.nodes.estimator_node:main",
            "policy_executor = simreal_ros.nodes.policy_node:main",
            "baseline_controller = simreal_ros.nodes.baseline_node:main",
            "push_baseline = simreal_ros.nodes.pusher_node:main",
            "safety_shield = simreal_ros.nodes.shield_node:main",
            "recorder = simreal_ros.nodes.recorder_node:main",
            "live_view = simreal_ros.nodes.view_node:main",
            "excitation_controller = simreal_ros.nodes.excitation_node:main",
        ],
    },
)
