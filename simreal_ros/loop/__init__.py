"""``simreal loop``: one session -> dataset -> calibration -> fine-tuning -> OPE -> gated rollout -> evaluation."""
