"""Torch-free tables that training, export and inference read: the input normalisations and the
names of the mixed-precision dtypes (the torch dtypes they stand for are mapped where torch is
imported, :data:`hvc.step.AMP_DTYPES`).
"""
from __future__ import annotations

#: ImageNet mean / std (RGB, on [0, 1] pixel values): used for training *and* inference here.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The CIFAR-10 constants the public reference trains with (``python -m hvc.train --normalization cifar10``).
REFERENCE_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
REFERENCE_CIFAR10_STD = (0.2023, 0.1994, 0.2010)
#: Input normalisations by name (``--normalization`` of ``python -m hvc.train``, recorded in encoder
#: files by :mod:`hvc.export`): name -> (mean, std) of RGB in [0, 1].
NORMALIZATION = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "cifar10": (REFERENCE_CIFAR10_MEAN, REFERENCE_CIFAR10_STD)}

#: Autocast dtypes of training (``--amp-dtype``): float16 (with a grad scaler, CUDA) or bfloat16;
#: ``auto`` is chosen by a probe on the machine at hand (:func:`hvc.step.resolve_precision`).
AMP_DTYPE_NAMES = ("float16", "bfloat16")
AMP_DTYPE_CHOICES = AMP_DTYPE_NAMES + ("auto",)
