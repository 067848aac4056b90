"""Separation defaults, shared by the Python API (:class:`danna_sep.Separator`) and ``danna separate``.

They live apart from ``separate/`` so that the command line can show them in ``--help`` without importing torch.
"""

DEFAULT_CHECKPOINTS = "~/danna-sep-checkpoints"  # else $DANNA_CHECKPOINTS or --checkpoints
SPECTRAL_SEGMENT_FRAMES = 512  # the U-Net's training length (11.89 s), a multiple of its 64-frame pooling grid
WAVEFORM_SEGMENT_SECONDS = 10.0  # Demucs's training length
OVERLAP = 0.25  # fraction of a segment cross-faded with the next, as Demucs's apply_model
NITER = 1  # Wiener EM iterations on the spectral models' estimates, as the original blend
SHIFTS = 1  # random-shift averaging passes
WIENER_WINDOW = 300  # STFT frames per Wiener block (≈ 7 s): bounded memory, covariances still over seconds
MEMORY_LIMIT_GIB = 2.5  # resident size above which kept freed heap memory is given back between pieces
