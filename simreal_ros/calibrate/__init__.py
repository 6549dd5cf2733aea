"""Calibrating the simulator from recorded sessions (ROS-free).

The pieces:

* ``session``: what a recorded bag holds for identification (:class:`Session`: measured joint
  states and the commands the shield sent, each on its own stamps; optionally when each state
  arrived). The bag reader builds them; tests build them from the MuJoCo arm
  (:mod:`simreal_ros.calibrate.simsession`).
* ``fit``: :func:`fit` turns sessions into a :class:`Calibration` with ``mujoco.sysid``
  (install the ``calibrate`` extra: ``pip install -e .[calibrate]``), built from ``params``
  (the parameters on the replay model), ``replay`` (chunks, when each command took effect, the
  rollouts and the residual), ``stages`` (the staged optimisation) and ``intervals`` (estimates
  with their std, and what the data cannot tell).
* ``outputs``: :func:`write_outputs` writes ``calibration.yaml`` (estimates, provenance, and a
  randomization profile accepted wherever a profile name is: ``--randomization DIR/calibration.yaml``)
  and the report (``report.png`` + ``report.json``).

API (what ``simreal calibrate fit BAG... --out DIR`` calls)::

    from simreal_ros.calibrate import FitConfig, fit, write_outputs
    cal = fit(sessions, FitConfig(), progress=True)   # list[Session] -> Calibration; tqdm bar
    paths = write_outputs(cal, out_dir)               # {"calibration": DIR/calibration.yaml,
                                                      #  "report_json": ..., "report_png": ...}
    for line in cal.warnings: print("warning:", line)  # what was not identified, and why

* :class:`FitConfig`: every setting declared with :func:`simreal_ros.settings.setting`
  (``settings_of(FitConfig)`` lists name, default, bounds, unit, description, e.g. to derive CLI
  options): ``parameters`` (kinds to identify: friction, damping, armature, gain_scale, payload,
  inertia, latency, bias), ``holdout_fraction``, ``chunk_duration``, ``residual_period``,
  ``min_fit_duration``, ``max_state_gap``, ``command_clock``, residual scales, ``min_joint_speed``,
  the stages (``short_share``, ``stage1_iters``, ``stage2_iters``, ``max_iters``, ``ftol``,
  ``stage_ftol``), ``widening`` (profile ranges = estimate +- widening x std), ``threads``.
* :func:`fit` raises :class:`SessionError` (one line, names the session) for a session it cannot
  use: joints of another robot, effort command mode, a gap in the joint states longer than
  ``max_state_gap``, or too little data (``min_fit_duration`` after the hold-out). Everything it
  could not identify is in ``cal.warnings`` and ``cal.estimates[name].reason``.
* :class:`Calibration` holds ``estimates`` (name -> :class:`Estimate`: ``value``, ``std``,
  ``unit``, ``prior``, ``identified``, ``reason``; value and std are ``None`` when not identified),
  ``link_inertials`` (the fitted model's link inertials), ``before``/``after`` (held-out replay
  with the nominal and the calibrated model: ``position_rmse`` per joint in rad,
  ``effort_rmse`` in N m), ``sources`` (provenance), ``stats`` (wall time, iterations, rollouts),
  ``belief`` (the state estimator's online friction/payload belief per session) and ``warnings``;
  ``stats["stages"]``: per stage its free parameters, replayed seconds, iterations, rollouts,
  wall time, objective and whether it converged (``stats["converged"]``: the last one did).

Push sessions (tracked puck poses on ``/simreal/object_pose``) also give the contact:
:mod:`simreal_ros.calibrate.contact` (``fit_contact`` -> ``ContactCalibration`` on the logs of
:func:`~simreal_ros.calibrate.contact_log.read_push_bag`: puck-table friction by replaying the
measured tool path against a MuJoCo puck with ``mujoco.sysid``, puck mass from the arm's
torques), written by ``write_outputs(cal, out, contact=...)`` into ``calibration.contact`` and the
profile's ``contact`` section (``cal`` may be ``None``: contact only).

Parameter names: ``friction/<joint>``, ``damping/<joint>``, ``armature/<joint>``,
``stiffness_scale/<joint>``, ``damping_scale/<joint>``, ``payload_mass``, ``payload_com``,
``link_mass/<link>``, ``link_com/<link>``, ``link_inertia/<link>``, ``action_latency``,
``observation_latency``, ``bias/<joint>``.
"""

from simreal_ros.calibrate.session import Session, SessionError, SourceInfo  # noqa: I001 (session first)
from simreal_ros.calibrate.fit import Calibration, Estimate, FitConfig, fit
from simreal_ros.calibrate.outputs import write_outputs

__all__ = ["Calibration", "Estimate", "FitConfig", "Session", "SessionError", "SourceInfo", "fit", "write_outputs"]
