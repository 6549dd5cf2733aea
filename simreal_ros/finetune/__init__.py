"""Improve a shipped policy from logged sessions, and judge the result before it drives.

- ``simreal finetune BUNDLE --data DS ... --out NEW`` (:mod:`simreal_ros.finetune.finetune`):
  offline RL with d3rlpy's TD3+BC on the logged transitions (plus, with ``--randomization``,
  transitions simulated in the calibrated simulator, mixed half and half into every batch as in
  RLPD), the actor initialised from the bundle's own network, a small actor learning rate and a
  penalty towards the frozen original's actions. The original bundle is only read.
- ``simreal ope NEW --data DS [--against PARENT]`` (:mod:`simreal_ros.finetune.ope`): fitted-Q
  evaluation (d3rlpy's FQE) with a bootstrap confidence interval, and a replay of the logged
  states through the new policy, the real shield core and the OOD monitor.

The logged data is read with :func:`simreal_ros.dataset.load`; :mod:`simreal_ros.finetune.data`
checks it against the bundle (task, robot, observation, action) and turns it into d3rlpy
episodes.
"""
