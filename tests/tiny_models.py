"""Tiny generators shared by the tests of the research tools (projection, editing): fast on a CPU, frames inside [-1, 1]."""
import torch

from stylegan_v.networks.generator import Generator


def tiny_generator(resolution: int = 16) -> Generator:
    "A seeded 32-channel StyleGAN-V G at `resolution` px, frozen in eval mode."
    torch.manual_seed(0)
    cfg = {'z_dim': 32, 'w_dim': 32, 'motion': {'z_dim': 32, 'v_dim': 32, 'motion_z_distance': 4},
           'time_enc': {'dim': 16, 'min_period_len': 4, 'max_period_len': 64}, 'sampling': {'max_num_frames': 16}}
    G = Generator(c_dim=0, w_dim=32, img_resolution=resolution, img_channels=3, mapping_kwargs={'num_layers': 2},
                  synthesis_kwargs={'channel_base': 256, 'channel_max': 32, 'num_fp16_res': 0, 'conv_clamp': None}, cfg=cfg)
    with torch.no_grad():  # a random G's frames are mostly clipped (no gradient); scaled ToRGB weights keep them inside
        for name, p in G.named_parameters():
            if 'torgb.weight' in name: p.mul_(0.3)
    return G.eval().requires_grad_(False)
