"""Training (``simreal train``) and evaluation (``simreal evaluate``) of reaching policies.

Needs the ``train`` extra (stable-baselines3, torch, onnx, matplotlib, imageio).
"""
