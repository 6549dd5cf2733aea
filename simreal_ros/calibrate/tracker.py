"""The object tracker's latency and noise from recorded push sessions (issue 13): the tracked poses'
acquisition stamps against their arrival at the recorder, and the scatter of the tracked positions.

The parameters are reported beside the contact fit's (:func:`simreal_ros.calibrate.contact.fit_contact`
calls :func:`fit_tracker` on the same :class:`~simreal_ros.calibrate.contact_log.PushLog` objects); how
each is identified is in :data:`simreal_ros.calibrate.contact.METHODS`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from simreal_ros.calibrate.contact import METHODS, ContactConfig, Estimate
from simreal_ros.calibrate.contact_log import PushLog


def fit_tracker(logs: Sequence[PushLog], cfg: ContactConfig, rate_hz: float) -> dict[str, Estimate]:
    """The object tracker's latency and noise from the bags' stamps and tracked positions (see
    :data:`METHODS`). A tracker that stamps at publication rather than acquisition shows no latency
    here; its latency then stays in the default profile's range."""
    names = ", ".join(log.name for log in logs)
    n_poses = sum(len(log.obj_t) for log in logs)

    def none(name: str, unit: str, why: str) -> Estimate:
        return Estimate(name, None, None, unit, 0.0, False, why, METHODS[name])

    if n_poses < cfg.min_tracked_poses:
        why = f"only {n_poses} tracked poses in {names} (at least {cfg.min_tracked_poses} needed)"
        return {"tracker_latency": none("tracker_latency", "s", why), "tracker_noise_std": none("tracker_noise_std",
                                                                                                "m", why)}
    out: dict[str, Estimate] = {}
    if any(log.obj_delay is None or log.state_delay is None for log in logs):
        out["tracker_latency"] = none("tracker_latency", "s", f"no arrival times in {names}")
    else:
        pose_d = np.concatenate([log.obj_delay for log in logs])
        state_d = np.concatenate([log.state_delay for log in logs])
        lat = float(np.median(pose_d) - np.median(state_d))
        spread = 1.4826 * float(np.median(np.abs(pose_d - np.median(pose_d))))
        std = max(spread, cfg.latency_floor)
        if lat < -3 * std:
            out["tracker_latency"] = none("tracker_latency", "s", f"the tracked poses arrived {-lat * 1e3:.0f} ms "
                                          f"before the joint states of the same stamps in {names}: the tracker's "
                                          "stamps are not on the arm's clock")
        else:
            out["tracker_latency"] = Estimate("tracker_latency", max(lat, 0.0), std, "s", 0.0, True, "",
                                              METHODS["tracker_latency"], lat)
    d2 = []
    for log in logs:
        t, xy = log.obj_t, log.obj_p[:, :2]
        if len(t) < 3:
            continue
        dt = np.diff(t)
        even = (np.abs(dt[:-1] - 1.0 / rate_hz) < 0.25 / rate_hz) & (np.abs(dt[1:] - 1.0 / rate_hz) < 0.25 / rate_hz)
        d2.append((xy[2:] - 2 * xy[1:-1] + xy[:-2])[even])
    d2a = np.concatenate(d2) if d2 else np.zeros((0, 2))
    if len(d2a) < cfg.min_tracked_poses // 2:
        out["tracker_noise_std"] = none("tracker_noise_std", "m", f"only {len(d2a)} evenly spaced triples of "
                                        f"tracked poses in {names}")
    else:
        sig = 1.4826 * np.median(np.abs(d2a - np.median(d2a, axis=0)), axis=0) / np.sqrt(6.0)
        v = float(np.mean(sig))
        std = max(float(np.abs(sig[0] - sig[1])) / 2, v / np.sqrt(len(d2a)), cfg.model_error * v, 1e-4)
        out["tracker_noise_std"] = Estimate("tracker_noise_std", v, std, "m", 0.0, True, "",
                                            METHODS["tracker_noise_std"], v)
    return out
