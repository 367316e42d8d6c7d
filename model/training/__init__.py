"""Training and evaluation of ResShift models (``resshift train`` / ``resshift eval``).

Modules, one idea each: ``config`` (the recipe), ``data`` (images, crops, degraded
batches), ``sample_images`` (wheel-shipped photos), ``build`` (networks), ``loss``
(Algorithm 1), ``optim`` (Adam + LR schedule), ``ema``, ``checkpoint`` (exact resume),
``distributed`` (torchrun/DDP), ``lpips`` (optional perceptual loss from user weights),
``evaluate`` (pairs, metrics tables) and ``trainer`` (the loop).
"""
