"""CPU speed-ups for inference, behind one door (see README.md in this folder)."""
