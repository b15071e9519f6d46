"""flowcore's networks. Every model is called as ``model(z, t, s, y=None, c=None)`` and returns a
tensor of z's shape, or ``(out, aux_out)`` when built with ``aux_head=True``
(see ``flowcore.nn.conditioning`` for the meaning of each argument)."""

from flowcore.nn.conditioning import (
    CompositeLayerNorm, ScalarEmbedding, TimeInputs, TimePairLogVariance, composite_layer_norms, sinusoidal_features,
)
from flowcore.nn.dit import Conditioning, DiT, DiTConfig, patchify, unpatchify
from flowcore.nn.mlp import MLP, MLPConfig

__all__ = [
    "CompositeLayerNorm",
    "Conditioning",
    "DiT",
    "DiTConfig",
    "MLP",
    "MLPConfig",
    "ScalarEmbedding",
    "TimeInputs",
    "TimePairLogVariance",
    "composite_layer_norms",
    "patchify",
    "sinusoidal_features",
    "unpatchify",
]
