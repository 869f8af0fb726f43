"""Dataset distillation as plain functions over tensors (pure PyTorch).

Methods: distribution matching (``distill_dm``), gradient matching with
DSA and IDC multi-formation (``distill_gm``), matching training
trajectories (``train_experts`` + ``distill_mtt``); DSA augmentation, ZCA
whitening, initialisation and the standard evaluation protocol.

Every random draw comes from the ``generator`` argument (a torch.Generator;
the global RNG is never used or reseeded), and the work runs on the device
of the real images. Distillation works on NORMALISED float images
(``data.normalize(x.float())``), or on ZCA-whitened ones (whitened from raw
[0, 1] pixels as MTT/KIP, see ``zca``); the results are in that space.
"""

from raylth.engine.data.dsa import DEFAULT_STRATEGY, DsaParams, apply_dsa, dsa, sample_dsa
from .common import embed
from .dm import distill_dm
from .evaluate import evaluate_images, random_subset
from .gm import distill_gm, match_distance
from .init import decode_labels, decode_multi, encode_multi, init_images
from .mtt import distill_mtt, train_experts
from .record import distilled_record
from raylth.engine.data.zca import ZCA_SPACES, Zca, fit_zca, fit_zca_space, space_input, whitened_train

__all__ = ["DEFAULT_STRATEGY", "DsaParams", "sample_dsa", "apply_dsa", "dsa", "embed",
           "distill_dm", "distill_gm", "match_distance", "train_experts", "distill_mtt",
           "evaluate_images", "random_subset", "init_images", "encode_multi", "decode_multi",
           "decode_labels", "Zca", "ZCA_SPACES", "fit_zca", "fit_zca_space", "space_input", "whitened_train",
           "distilled_record"]
