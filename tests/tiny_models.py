"""Tiny models shared by the tests: a generator for the research tools (projection, editing; fast on a CPU, frames inside
[-1, 1]) and a training run config for the loop's tests (resume, faults), both from the named model presets."""
import torch

from stylegan_v.config import RunConfig, model_preset
from stylegan_v.networks.generator import Generator

FRAMES_PER_STEP = 4 * 3   # a step of the tiny run: 4 videos x 3 frames


def tiny_generator(resolution: int = 16, c_dim: int = 0) -> Generator:
    "A seeded 32-channel StyleGAN-V G at `resolution` px (the `demo` preset, narrower at 16 px, shorter periods), frozen in eval mode; `c_dim` classes."
    torch.manual_seed(0)
    model = model_preset('demo', fmaps=256 / 32768, motion_v_dim=32, time_enc_min_period_len=4, time_enc_max_period_len=64)
    G = Generator(**model.generator_kwargs(resolution, c_dim=c_dim, max_num_frames=16))
    with torch.no_grad():  # a random G's frames are mostly clipped (no gradient); scaled ToRGB weights keep them inside
        for name, p in G.named_parameters():
            if 'torgb.weight' in name: p.mul_(0.3)
    return G.eval().requires_grad_(False)


def tiny_run_config(data, steps: int, steps_per_tick: int, snap: int, *overrides: str) -> RunConfig:
    "A 16 px run (`tiny` preset) of `steps` steps of 4 videos, a tick every `steps_per_tick` steps, a snapshot every `snap` ticks."
    return RunConfig(model=model_preset('tiny')).override([
        f'data.path={data}', 'data.resolution=16', 'data.max_num_frames=32', 'train.batch_size=4', 'train.num_workers=0',
        'train.r1_gamma=1.0', 'train.dtype=fp32', 'train.D_reg_interval=2', 'train.ada_interval=3', 'train.ada_kimg=1',
        f'train.kimg={steps * FRAMES_PER_STEP / 1000}', f'train.kimg_per_tick={steps_per_tick * FRAMES_PER_STEP / 1000}',
        f'train.snap={snap}', 'train.grid_videos=2', 'train.grid_frames=3', 'train.progress=false', 'train.keep_last=0',
        'train.device=cpu', 'metrics.metrics=[]', *overrides])
