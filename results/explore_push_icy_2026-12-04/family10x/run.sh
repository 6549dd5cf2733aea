#!/bin/bash
# issue 14, 2026-12-04: a family 10x the 2026-12-02 budget (DAgger 60,000 + SAC 150,000 steps), the
# executor's progress monitor off for families, the task policy warm-started as the family was
set -x
cd /tmp/exp3 || exit 1
S=.venv/bin/simreal
REAL=test/data/hidden_table_icy.yaml
date
[ -d family ] || $S train --task push --explore 4 --pretrain-steps 60000 --timesteps 150000 --out /tmp/exp3/family --no-progress || exit 1
date
$S explore /tmp/exp3/family --episodes 20 --real $REAL --output-dir /tmp/exp3/sessions --no-progress || exit 1
date
BAGS=$(ls -d /tmp/exp3/sessions/*/ | grep -v _logs)
$S dataset $BAGS --out /tmp/exp3/ds || exit 1
date
$S finetune /tmp/exp3/family --from-exploration --data /tmp/exp3/ds --pretrain-steps 60000 --actor-warmup 5000 --timesteps 30000 --out /tmp/exp3/task --no-progress || exit 1
date
$S evaluate /tmp/exp3/task --real $REAL --episodes 30 --out /tmp/exp3/eval --no-render || exit 1
date
