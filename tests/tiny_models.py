"""Tiny models shared by the tests: a generator for the research tools (projection, editing; fast on a CPU, frames inside
[-1, 1]) and a training plan for the loop's tests (resume, faults)."""
import torch

from stylegan_v.networks.generator import Generator
from stylegan_v.train import TrainPlan, tiny_model_kwargs

FRAMES_PER_STEP = 4 * 3   # a step of the tiny plan: 4 videos x 3 frames


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


def tiny_train_plan(data, steps: int, steps_per_tick: int, snap: int, **kw) -> TrainPlan:
    "A 16 px plan of `steps` steps of 4 videos, a tick every `steps_per_tick` steps, a snapshot every `snap` ticks (`kw` overrides)."
    G, D = tiny_model_kwargs(16, 16)
    base = dict(data=str(data), G_kwargs=G, D_kwargs=D, batch=4, num_workers=0, r1_gamma=1.0, dtype='fp32',
                D_reg_interval=2, ada_interval=3, ada_kimg=1, kimg=steps * FRAMES_PER_STEP / 1000,
                kimg_per_tick=steps_per_tick * FRAMES_PER_STEP / 1000, snap=snap, grid_videos=2, grid_frames=3,
                progress=False, keep_last=0, device='cpu')
    return TrainPlan(**{**base, **kw})
