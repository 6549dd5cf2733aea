#!/bin/bash
# issue 14, second measurement (2026-12-04): the family of 2026-12-02's budget, run with the
# executor's progress monitor off for families, and the task policy warm-started as the family was
set -x
cd /tmp/exp2 || exit 1
S=.venv/bin/simreal
REAL=test/data/hidden_table_icy.yaml
date
[ -d family ] || $S train --task push --explore 4 --pretrain-steps 20000 --timesteps 15000 --out /tmp/exp2/family --no-progress || exit 1
date
$S explore /tmp/exp2/family --episodes 20 --real $REAL --output-dir /tmp/exp2/sessions --no-progress || exit 1
date
BAGS=$(ls -d /tmp/exp2/sessions/*/ | grep -v _logs)
$S dataset $BAGS --out /tmp/exp2/ds || exit 1
date
$S finetune /tmp/exp2/family --from-exploration --data /tmp/exp2/ds --pretrain-steps 20000 --actor-warmup 2000 --timesteps 15000 --out /tmp/exp2/task --no-progress || exit 1
date
$S evaluate /tmp/exp2/task --real $REAL --episodes 30 --out /tmp/exp2/eval --no-render || exit 1
date
# then by hand (console_warm60k.txt, evaluation_warm60k.json): the same data, the family-sized warm start
# .venv/bin/simreal finetune /tmp/exp2/family --from-exploration --data /tmp/exp2/ds --pretrain-steps 60000 --actor-warmup 5000 --timesteps 30000 --out /tmp/exp2/task2 --no-progress
# .venv/bin/simreal evaluate /tmp/exp2/task2 --real test/data/hidden_table_icy.yaml --episodes 30 --out /tmp/exp2/eval2 --no-render
