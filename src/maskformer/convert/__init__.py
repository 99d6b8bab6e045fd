"""Checkpoint converters: rename tables from other layouts (detectron2, transformers) to this project's keys (every
source key consumed or reported), the restricted unpickler for ``.pkl`` files, and the translation between
transformers' ``config.json`` and ``Config``. Reading and writing whole checkpoint files is ``engine/conversion.py``.

May import: ``maskformer.config``, ``maskformer.errors`` and constants of ``maskformer.modeling`` (block counts of a
ResNet depth). Never imports ``data``, ``inference``, ``build``, ``engine`` or ``cli``: it maps names and shapes.
"""
