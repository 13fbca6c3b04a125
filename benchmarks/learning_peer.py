"""The peer: lightly's VICReg (VICRegLoss, VICRegProjectionHead, VICRegTransform in a
DataLoader) written as its examples do, with our recipe's epochs, batch, optimiser and
schedule, for the learning benchmark's side-by-side table."""

from __future__ import annotations

import time

import torch

from vicreg.config import Config
from vicreg.optim import lr_at, warmup_steps


def peer_pretrain(cfg: Config, images: torch.Tensor, seed: int = 0, workers: int = 2) -> tuple[torch.nn.Module, float]:
    """lightly's VICReg, written as its examples do; returns (encoder, pretraining seconds)."""
    import torchvision
    from lightly.loss import VICRegLoss
    from lightly.models.modules.heads import VICRegProjectionHead
    from lightly.transforms.vicreg_transform import VICRegTransform
    from PIL import Image

    size, a = cfg.data.image_size, cfg.augment
    x = images.float() / 255
    mean, std = x.mean().item(), x.std().item()
    # The same recipe in lightly's symmetric form: its defaults are the VICReg paper's
    # (cj_strength 0.5 x (0.8, 0.8, 0.4, 0.2) = jitter (0.4, 0.4, 0.2, 0.1)), with blur and
    # solarisation at the mean of our two views' probabilities, blur sigma scaled as ours.
    transform = VICRegTransform(
        input_size=size, cj_prob=a.jitter_p, cj_strength=0.5 * a.jitter_strength, min_scale=a.crop_min_scale,
        random_gray_scale=a.grayscale_p, solarize_prob=(a.solarize_p_a + a.solarize_p_b) / 2,
        gaussian_blur=(a.blur_p_a + a.blur_p_b) / 2,
        sigmas=(a.blur_sigma[0] * size / 224, a.blur_sigma[1] * size / 224), hf_prob=a.flip_p,
        normalize={"mean": [mean], "std": [std]})
    pil = [Image.fromarray(im[0].numpy(), mode="L") for im in images]

    class Views(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(pil)

        def __getitem__(self, i: int):
            return transform(pil[i])

    torch.manual_seed(seed)
    backbone = torchvision.models.resnet18(weights=None)
    backbone.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)  # the CIFAR stem, as ours at <= 64 px
    backbone.maxpool = torch.nn.Identity()
    backbone.fc = torch.nn.Identity()
    head = VICRegProjectionHead(512, cfg.model.expander_hidden, cfg.model.expander_out, cfg.model.expander_layers)
    model = torch.nn.Sequential(backbone, head)
    criterion = VICRegLoss()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    loader = torch.utils.data.DataLoader(Views(), batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0)
    steps = len(loader)
    total, warm = cfg.train.epochs * steps, warmup_steps(cfg.optim, cfg.train.epochs, steps)
    t0 = time.perf_counter()
    step = 0
    model.train()
    for _ in range(cfg.train.epochs):
        for v0, v1 in loader:
            for g in opt.param_groups:  # the same warm-up + cosine schedule as ours
                g["lr"] = lr_at(step, total, warm, cfg.optim.lr, cfg.optim.final_lr_ratio)
            loss = criterion(model(v0), model(v1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return backbone.eval(), time.perf_counter() - t0
