"""danna-sep: music source separation by blending X-UMX, a D3/attention U-Net and a 4-decoder Demucs.

Pipeline (one module or folder per step)::

    audio → spectral → models → wiener / losses → train / separate / evaluate
"""

import os
from importlib.metadata import PackageNotFoundError, version
from typing import Union

try:
    __version__ = version("danna-sep")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

SOURCES = ("drums", "bass", "other", "vocals")
"""Source order of every model output, dataset item and blend column."""

SAMPLE_RATE = 44100
"""Sample rate inside the models."""

PathLike = Union[str, "os.PathLike[str]"]
"""A file or folder name: ``str`` or ``pathlib.Path``."""

N_FFT = 4096
HOP_LENGTH = 1024
"""STFT of the spectral models, the losses and separation (:mod:`danna_sep.spectral`); here, torch-free, for
the command line's help texts."""


def __getattr__(name: str):
    # Lazy so that `import danna_sep` stays cheap for the command line.
    if name == "Separator":
        from .separate import Separator

        return Separator
    raise AttributeError(name)
