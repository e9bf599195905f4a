"""``fix-decoder``: freeze the decoder, update only the encoder on the noisy-label forgetting objective.

The decoder's weights and its batch-norm statistics stay exactly as trained (its batch norms run in eval mode, so the
decoder is one fixed function), and the forgetting has to happen in the encoder's representation of the forget
subjects.
"""

from __future__ import annotations

import torch.nn as nn

from ..segment.train import PatchData
from .base import STRATEGIES, ForgetTask, Strategy
from .noisy_label import NoisyLabel


def _stay_in_eval(module: nn.Module, args: tuple) -> None:
    module.eval()


@STRATEGIES.register("fix-decoder")
class FixDecoder(Strategy):
    """Frozen decoder; the encoder learns true retain labels and random forget labels."""

    def prepare(self, model: nn.Module, task: ForgetTask) -> nn.Module:
        for top in model.decoder():
            for m in top.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.register_forward_pre_hook(_stay_in_eval)  # model.train() each epoch must not undo this
            for p in top.parameters():
                p.requires_grad_(False)
        return model

    def data(self, task: ForgetTask) -> PatchData:
        return NoisyLabel().data(task)
