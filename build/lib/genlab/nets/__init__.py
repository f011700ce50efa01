from genlab.nets.common import DiscriminatorHeads, LabelConditioning
from genlab.nets.conv import ConvDecoder, ConvEncoder, JointDiscriminator
from genlab.nets.mlp import MLPDecoder, MLPEncoder

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "DiscriminatorHeads",
    "JointDiscriminator",
    "LabelConditioning",
    "MLPDecoder",
    "MLPEncoder",
]
