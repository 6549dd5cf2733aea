"""Bring the node graph up: its one definition (graph.py), the launch-free runners and ``simreal sim``."""
