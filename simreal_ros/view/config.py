"""The live view's settings (declared once; the view node's parameters derive from them)."""

from __future__ import annotations

from dataclasses import dataclass

from simreal_ros.settings import setting, validate_fields


@dataclass(frozen=True)
class ViewConfig:
    """Where the Foxglove WebSocket listens and how often the arm is redrawn."""

    host: str = setting("127.0.0.1", "address the Foxglove WebSocket server binds to (127.0.0.1: this machine "
                        "only)")
    port: int = setting(8765, "TCP port of the Foxglove WebSocket server (0: any free port, logged)", low=0,
                        high=65535)
    base_frame: str = setting("base", "frame the goal and object poses are stamped in (the sim bridge's goal_frame): "
                              "sent on /tf as identical to the URDF's root link; '' = none")
    state_rate_hz: float = setting(30.0, "joint states and link transforms are sent at most this often",
                                   unit="Hz", low=1.0, high=1000.0)
    description_period: float = setting(2.0, "the robot description (URDF) is re-sent this often, and to every "
                                        "new subscriber at once", unit="s", low=0.1, high=3600.0)

    def __post_init__(self) -> None:
        validate_fields(self)

    @classmethod
    def from_mapping(cls, values) -> ViewConfig:
        from simreal_ros.settings import from_settings

        return from_settings(cls, values, "view")
