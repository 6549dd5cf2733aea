#!/bin/bash
set -x
cd /tmp/exp || exit 1
S=.venv/bin/simreal
REAL=test/data/hidden_table_icy.yaml
date
$S train --task push --explore 4 --pretrain-steps 20000 --timesteps 15000 --out /tmp/exp/family --no-progress || exit 1
date
$S explore /tmp/exp/family --episodes 20 --real $REAL --output-dir /tmp/exp/sessions --no-progress || exit 1
date
BAGS=$(ls -d /tmp/exp/sessions/*/ | grep -v _logs)
$S dataset $BAGS --out /tmp/exp/ds || exit 1
date
$S finetune /tmp/exp/family --from-exploration --data /tmp/exp/ds --timesteps 15000 --out /tmp/exp/task --no-progress || exit 1
date
$S evaluate /tmp/exp/task --real $REAL --episodes 30 --out /tmp/exp/eval --no-render || exit 1
date
