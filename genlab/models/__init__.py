from genlab.models.autoencoder import Autoencoder
from genlab.models.base import GenerativeModule
from genlab.models.bigan import BiGAN
from genlab.models.gan import GAN
from genlab.models.vae import VAE
from genlab.models.vqvae import VQVAE

__all__ = ["GAN", "VAE", "VQVAE", "Autoencoder", "BiGAN", "GenerativeModule"]
