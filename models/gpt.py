"""A small decoder-only transformer language model (GPT-2's layout, byte-level by default)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["GPT", "Block"]

_INIT = nn.initializers.normal(stddev=0.02)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(LN(x))`` then ``x + mlp(LN(x))``.

    The attention is causal multi-head self-attention; the MLP is ``4 * width`` wide with
    GELU. The residual projections start at GPT-2's smaller scale
    ``0.02 / sqrt(2 * num_layers)``.

    Attributes:
      num_heads: attention heads (``width`` must be a multiple).
      num_layers: blocks in the whole model (scales the residual projections' init).
      mlp_ratio: hidden width of the MLP over ``width``.
    """

    num_heads: int
    num_layers: int
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """``x`` float32 ``[B, T, width]``; ``mask`` broadcastable to ``[B, heads, T, T]``."""
        width = x.shape[-1]
        out_init = nn.initializers.normal(stddev=0.02 / (2 * self.num_layers) ** 0.5)
        y = nn.LayerNorm()(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, kernel_init=_INIT, out_kernel_init=out_init
        )(y, y, mask=mask)
        x = x + y
        y = nn.LayerNorm()(x)
        y = nn.gelu(nn.Dense(self.mlp_ratio * width, kernel_init=_INIT)(y))
        return x + nn.Dense(width, kernel_init=out_init)(y)


class GPT(nn.Module):
    """Decoder-only transformer: token and learned position embeddings, pre-LN blocks
    with causal self-attention, a final LayerNorm and a weight-tied output layer.

    The logits are ``LN(h) @ E^T`` with ``E`` the token embedding (no separate output
    matrix, no output bias). Position ``t``'s logits depend only on tokens ``0..t``.

    Attributes:
      num_classes: vocabulary size (256 for bytes).
      num_layers: transformer blocks.
      width: model width (embedding size).
      num_heads: attention heads.
      context: the longest sequence (size of the position embedding).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = GPT(num_classes=256, num_layers=1, width=16, num_heads=2, context=8)
      >>> tokens = jnp.zeros((2, 8), jnp.int32)
      >>> variables = model.init(jax.random.key(0), tokens)
      >>> model.apply(variables, tokens).shape
      (2, 8, 256)
    """

    num_classes: int = 256
    num_layers: int = 4
    width: int = 128
    num_heads: int = 4
    context: int = 128

    @nn.compact
    def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
        """Logits ``[B, T, num_classes]`` of the next token at every position.

        Args:
          tokens: ``[B, T]`` token ids (any numeric dtype; cast to int32), ``T <= context``.
          train: unused (no dropout, no batch norm); accepted like every model's.
        """
        del train
        if tokens.ndim != 2 or tokens.shape[1] > self.context:
            raise ValueError(
                f"tokens must be [batch, length <= {self.context}], got shape {tokens.shape}"
            )
        tokens = tokens.astype(jnp.int32)
        embed = nn.Embed(self.num_classes, self.width, embedding_init=_INIT, name="embed")
        positions = self.param("positions", _INIT, (self.context, self.width))
        x = embed(tokens) + positions[: tokens.shape[1]]
        mask = nn.make_causal_mask(tokens)
        for i in range(self.num_layers):
            x = Block(self.num_heads, self.num_layers, name=f"block_{i}")(x, mask)
        x = nn.LayerNorm(name="ln_final")(x)
        return embed.attend(x)
