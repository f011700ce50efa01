"""Nets are sized from image_size and channels."""

import pytest
import torch

from genlab.errors import ConfigError
from genlab.nets import MLPDecoder, MLPEncoder


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 32), (3, 64)])
def test_mlp_shapes(channels, size):
    enc = MLPEncoder(channels, size, hidden_dims=[32, 16], out_dim=5)
    dec = MLPDecoder(4, channels, size, hidden_dims=[16, 32], batch_norm=True, output="tanh")
    x = torch.randn(3, channels, size, size)
    assert enc(x).shape == (3, 5)
    y = dec(torch.randn(3, 4))
    assert y.shape == (3, channels, size, size)
    assert y.abs().max() <= 1


def test_encoder_without_head_exposes_its_width():
    enc = MLPEncoder(1, 8, hidden_dims=[32, 16])
    assert enc.out_dim == 16 and enc(torch.randn(2, 1, 8, 8)).shape == (2, 16)


def test_dropout_and_batchnorm_are_where_asked():
    enc = MLPEncoder(1, 8, hidden_dims=[16], out_dim=1, dropout=0.3)
    dec = MLPDecoder(4, 1, 8, hidden_dims=[16], batch_norm=True)
    assert any(isinstance(m, torch.nn.Dropout) for m in enc.modules())
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in dec.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in enc.modules())


def test_bad_activation_names_the_choices():
    with pytest.raises(ConfigError, match="'gelu2'.*relu"):
        MLPEncoder(1, 8, hidden_dims=[4], activation="gelu2")
