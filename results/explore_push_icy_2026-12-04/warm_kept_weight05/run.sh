#!/bin/bash
# issue 14, 2026-12-04 session 2: the family with a diversity weight of 0.1 (was 0.5), so that the codes
# 2nd try: the first (like 2026-12-04 night's families) collapsed: SAC pulled the DAgger warm start apart (task return -30), the diversity reward never came on; now the actor is frozen for the first 30,000 env steps
# 3rd try: the 2nd collected with the untrained log-std head (std about 1 pre-tanh: training success 10 % while frozen); now a constant log std -1.6 after the warm start
# 4th try: the 3rd kept the warm start while the actor was frozen (training success 0.95-1.00) and lost it within 15,000 steps after (0.07): SAC's entropy coefficient started at 1.0; now from 0.01 after a warm start
# exp5: the same with the default diversity weight 0.5 (weight 0.1 gave a family at chance: discriminator accuracy 0.26 for 0.25)

set -x
cd /tmp/exp5 || exit 1
S=.venv/bin/simreal
date
[ -d family ] || $S train --task push --explore 4 --explore-diversity-weight 0.5 --pretrain-steps 60000 --actor-warmup 30000 --log-std-init -1.6 --timesteps 150000 --out /tmp/exp5/family 2> family_progress.txt || exit 1
date
$S evaluate /tmp/exp5/family --episodes 20 --out /tmp/exp5/evalfam --no-render
for T in icy; do
  REAL=test/data/hidden_table_$T.yaml
  date
  [ -d sessions_$T ] || $S explore /tmp/exp5/family --episodes 20 --real $REAL --output-dir /tmp/exp5/sessions_$T --no-progress || exit 1
  date
  BAGS=$(ls -d /tmp/exp5/sessions_$T/*/ | grep -v _logs)
  [ -d ds_$T ] || $S dataset $BAGS --out /tmp/exp5/ds_$T || exit 1
  date
  [ -d task_$T ] || $S finetune /tmp/exp5/family --from-exploration --data /tmp/exp5/ds_$T --pretrain-steps 60000 --actor-warmup 5000 --timesteps 30000 --sim-ratio 0.25 --out /tmp/exp5/task_$T --no-progress || exit 1
  date
  $S evaluate /tmp/exp5/task_$T --real $REAL --episodes 30 --out /tmp/exp5/eval_$T --no-render || exit 1
  $S evaluate /tmp/exp5/task_$T --episodes 30 --out /tmp/exp5/evalnom_$T --no-render
  date
done
# stopped after the family and its evaluation (time): the icy session and task policy did not run
