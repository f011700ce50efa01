from genlab.nets.mlp import MLPDecoder, MLPEncoder

__all__ = ["MLPDecoder", "MLPEncoder"]
