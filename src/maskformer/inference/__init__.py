"""Inference: everything between a trained model and what a user looks at.

- ``preprocess``: read an image, the original's test-time resize, normalise and pad.
- ``postprocess``: semantic / panoptic inference from the model outputs (the original's logic), TTA.
- ``predictor``: ``Predictor`` owns the whole image path: load -> (optional) accelerate -> preprocess -> model ->
  postprocess; ``visualize``: overlays and legends; ``render``: the pictures and segment lists of one result;
  ``video``: prediction on videos; ``device``: which devices the package runs on; ``export``: ONNX.
- ``accelerate/``: CPU speed-ups behind one function (``accelerate.accelerate``), chosen by the Predictor; the exact
  reference path is always available and gives the same labels.

May import: ``modeling`` (only to build faster copies in ``accelerate``), ``config``, ``errors``. Never imports
``data``, ``engine`` or ``cli``. This ``__init__`` imports nothing, so ``maskformer.data`` can use ``preprocess``.
"""
