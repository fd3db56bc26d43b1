"""Learning-rate schedules by name (optim.schedule). torch is imported when one is made, so config
validation can check a name against this dict without loading torch."""
from __future__ import annotations


def _multistep(opt, cfg):
    import torch

    return torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.milestones), gamma=cfg.gamma)


def _cosine(opt, cfg):
    import torch

    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)


def _constant(opt, cfg):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)


SCHEDULES = {"multistep": _multistep, "cosine": _cosine, "constant": _constant}
