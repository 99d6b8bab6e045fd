"""The training criterion: Hungarian matching (``matcher``), the set loss and the per-pixel loss (``losses``), the
fused focal + dice kernel (``fused_loss``) and uncertainty point sampling (``point_sampling``).

May import: ``maskformer.errors`` and torch/scipy only. Never imports ``modeling``, ``data``, ``engine`` or ``cli``:
it sees the model only through the outputs dict and the data only through the targets list.
"""
