"""The machinery around a model: the training loop (``train``), evaluation on a dataset (``evaluate``, through the
same ``Predictor`` as ``predict``), self-describing checkpoints and the one metadata schema (``checkpoint``),
checkpoint file conversion (``conversion``), torchrun set-up (``distributed``), logs (``logging``), process-wide
settings of the command line (``runtime``), parameter and FLOP counts (``analysis``) and benchmark timing
(``timing``).

May import: ``build`` and everything below it (``modeling``, ``criterion``, ``inference``, ``data``, ``evaluation``,
``convert``, ``optim``, ``config``, ``errors``). Never imports ``cli``, ``serve`` or ``zoo`` (they sit on top).
"""
