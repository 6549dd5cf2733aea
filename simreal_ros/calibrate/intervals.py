"""What the fit found, as estimates with intervals, and what the data cannot tell.

The toolbox's ``calculate_intervals`` gives the covariance of the free parameters at the
optimum; :func:`estimates` turns it into one :class:`Estimate` per quantity (the link inertias'
log-Cholesky parameters become mass, centre of mass and inertia by the delta method) and judges
each: an estimate whose std is not below its kind's resolution (``RESOLUTION``) is reported as
not identified, with the reason, and without a value. :func:`observation_latency` reads the
observation latency off the recorder's receive times (a replay of the sent commands cannot see it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from mujoco import sysid

from simreal_ros.calibrate.params import UNITS, link_inertial
from simreal_ros.calibrate.session import Session


@dataclass
class Estimate:
    """One identified quantity. ``value``/``std`` are ``None`` when not identified (``reason`` says why)."""

    name: str
    unit: str
    prior: float | list[float]
    value: float | list[float] | None
    std: float | list[float] | None
    identified: bool
    reason: str = ""
    fitted: float | list[float] | None = None  # the optimizer's value even when not identified (simulation only)

    def as_dict(self) -> dict[str, Any]:
        d = {"value": self.value, "std": self.std, "unit": self.unit, "prior": self.prior,
             "identified": self.identified}
        if self.reason:
            d["reason"] = self.reason
        return d



#: An estimate is identified when its std is below rel x |value| + floor (per kind).
RESOLUTION = {"friction": (0.2, 0.02), "damping": (0.2, 0.02), "armature": (0.3, 0.003),
               "stiffness_scale": (0.0, 0.03), "damping_scale": (0.0, 0.03), "payload_mass": (0.1, 0.03),
               "payload_com": (0.0, 0.01), "action_latency": (0.0, 0.001), "bias": (0.0, 2e-4),
               "link_mass": (0.2, 0.05), "link_com": (0.0, 0.01), "link_inertia": (0.5, 1e-3)}


def judge(kind: str, value: np.ndarray, std: np.ndarray) -> tuple[bool, str]:
    rel, floor = RESOLUTION[kind]
    lim = rel * np.abs(value) + floor
    ok = np.all(np.isfinite(std)) and np.all(std <= lim)
    if ok:
        return True, ""
    worst = float(np.nanmax(np.where(np.isfinite(std), std / lim, np.inf)))
    return False, (f"the data does not determine it (std {_fmt(std)} vs the {_fmt(lim)} needed"
                   f"{'' if np.isfinite(worst) else ': no information'})")


def _fmt(a) -> str:
    a = np.atleast_1d(np.asarray(a, float))
    return ", ".join(f"{x:.3g}" for x in a) if a.size > 1 else f"{a[0]:.3g}"


def _plain(a) -> float | list[float]:
    a = np.asarray(a, float)
    return float(a.ravel()[0]) if a.size == 1 else [float(x) for x in a.ravel()]


def estimates(opt: sysid.ParameterDict, prior: sysid.ParameterDict, std: np.ndarray, cov: np.ndarray,
               reasons: dict[str, str], warnings: list[str]):
    est: dict[str, Estimate] = {}
    links: dict[str, tuple[float, list[float], list[float]]] = {}
    off = 0
    for name, p in opt.items():
        kind = name.split("/")[0]
        nominal = prior[name].as_vector()
        if p.frozen:
            s = None
        else:
            s = std[off:off + p.size]
            block = cov[off:off + p.size, off:off + p.size]
            off += p.size
        if kind == "inertia":
            link = name.split("/", 1)[1]
            m, c, inertia = link_inertial(p.value)
            links[link] = (m, [float(x) for x in c], [float(x) for x in inertia])
            m0, c0, i0 = link_inertial(nominal)
            if s is None:
                for key, v0, unit in (("link_mass", m0, "kg"), ("link_com", c0, "m"), ("link_inertia", i0, "kg m^2")):
                    est[f"{key}/{link}"] = Estimate(f"{key}/{link}", unit, _plain(v0), None, None, False, reasons[name])
                continue
            g = _derived_cov(p.value, block)
            for key, v, v0, sl, unit in (("link_mass", m, m0, slice(0, 1), "kg"), ("link_com", c, c0, slice(1, 4), "m"),
                                         ("link_inertia", inertia, i0, slice(4, 10), "kg m^2")):
                sd = np.sqrt(np.maximum(np.diag(g)[sl], 0.0))
                if not np.all(np.isfinite(s)):
                    sd = np.full(sd.shape, np.inf)
                ok, why = judge(key, np.atleast_1d(v), sd)
                e = Estimate(f"{key}/{link}", unit, _plain(v0), _plain(v) if ok else None,
                             _plain(sd) if ok else None, ok, why, fitted=_plain(v))
                est[e.name] = e
            continue
        unit = UNITS[kind]
        if s is None:
            est[name] = Estimate(name, unit, _plain(nominal), None, None, False, reasons[name])
            continue
        ok, why = judge(kind, p.as_vector(), s)
        est[name] = Estimate(name, unit, _plain(nominal), _plain(p.as_vector()) if ok else None,
                             _plain(s) if ok else None, ok, why, fitted=_plain(p.as_vector()))
    for e in est.values():
        if not e.identified and e.reason and not e.reason.startswith("not fitted") and e.name not in reasons:
            warnings.append(f"{e.name}: {e.reason}")
    return est, links


def _derived_cov(theta: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Covariance of (mass, com, inertia) from that of the log-Cholesky parameters (delta method)."""
    def g(t):
        m, c, i = link_inertial(t)
        return np.concatenate([[m], c, i])
    g0 = g(theta)
    jac = np.zeros((10, theta.size))
    for k in range(theta.size):
        h = 1e-6 * max(1.0, abs(theta[k]))
        t = theta.copy()
        t[k] += h
        jac[:, k] = (g(t) - g0) / h
    with np.errstate(invalid="ignore"):
        return jac @ block @ jac.T


def observation_latency(sessions: list[Session]) -> Estimate:
    """Median of (arrival - acquisition stamp) of the joint states, the recorder's own lag taken
    off (:func:`~simreal_ros.calibrate.replay.publish_times`); std: their spread."""
    from simreal_ros.calibrate.replay import publish_times

    lags = [publish_times(s) - s.state_t for s in sessions if s.state_recv_t is not None]
    if len(lags) < len(sessions) or not lags:
        return Estimate("observation_latency", "s", 0.0, None, None, False,
                        "the sessions have no arrival times of the joint states; a replay of the sent commands "
                        "cannot tell observation from action latency")
    lag = np.concatenate(lags)
    med = float(np.median(lag))
    spread = float(1.4826 * np.median(np.abs(lag - med)))
    if med < 0:
        return Estimate("observation_latency", "s", 0.0, None, None, False,
                        f"joint states arrive before they were taken (median {med:.4f} s): clocks differ")
    return Estimate("observation_latency", "s", 0.0, med, max(spread, 1e-4), True, fitted=med)
