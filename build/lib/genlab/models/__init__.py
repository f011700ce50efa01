from genlab.models.base import GenerativeModule
from genlab.models.bigan import BiGAN
from genlab.models.gan import GAN
from genlab.models.vae import VAE

__all__ = ["GAN", "VAE", "BiGAN", "GenerativeModule"]
