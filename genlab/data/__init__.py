from genlab.data.augment import Augment
from genlab.data.base import GenDataModule, ImageTensorDataset, collate
from genlab.data.digits import DigitsDataModule
from genlab.data.dsprites import DSpritesDataModule
from genlab.data.files import CelebADataModule, ImageFileDataset, ImageFolderDataModule
from genlab.data.torchvision_sets import TorchvisionDataModule

__all__ = [
    "Augment",
    "CelebADataModule",
    "DSpritesDataModule",
    "DigitsDataModule",
    "GenDataModule",
    "ImageFileDataset",
    "ImageFolderDataModule",
    "ImageTensorDataset",
    "TorchvisionDataModule",
    "collate",
]
