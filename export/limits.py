"""Sizes that the built artefacts and the service that runs them must agree on.

Kept free of heavy imports: ``service.settings`` reads it for its defaults.
"""

# The most latent tiles one UNet call takes: the batch dimension's upper bound in every
# TensorRT profile, and the service's default ``max_batch`` (an engine must accept what
# the service batches).
MAX_BATCH = 8
