"""Video I/O (stylegan_v.data.video): the streaming atomic writer, to_uint8, probing, and seek-based sparse decoding."""
import random
import threading

import numpy as np
import pytest
import torch

from stylegan_v.data import video
from stylegan_v.data.video import (VideoReadError, VideoWriter, frame_pts, iter_video_frames, probe_video,
                                   read_video_frames, to_uint8, write_video)


def flat_frames(n, size=32, seed=0):
    "n flat frames of random colours (each frame easy to tell from the others after lossy coding)."
    colours = np.random.default_rng(seed).integers(0, 256, (n, 1, 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.broadcast_to(colours, (n, size, size, 3)))


def files_in(d):
    return sorted(p.name for p in d.iterdir())


# ---------------------------------------------------------------------------------------------- to_uint8

def test_to_uint8_matches_the_original_mapping_and_layouts():
    x = torch.linspace(-1.2, 1.2, 25)
    want = np.clip(np.clip(x.numpy(), -1, 1) * 127.5 + 128, 0, 255).astype(np.uint8)
    assert np.array_equal(to_uint8(x), want) and to_uint8(x).dtype == np.uint8
    assert np.array_equal(to_uint8(x.numpy()), want)
    frames = torch.rand(2, 3, 3, 4, 5) * 2 - 1            # [B, T, C, H, W]
    hwc = to_uint8(frames, channels_last=True)
    assert hwc.shape == (2, 3, 4, 5, 3) and hwc.flags.c_contiguous
    assert np.array_equal(hwc, to_uint8(frames).transpose(0, 1, 3, 4, 2))
    assert to_uint8(frames.requires_grad_()).shape == frames.shape   # detaches
    kept = to_uint8(frames, channels_last=True, keep_tensor=True)      # stays a tensor (on its device), same bytes
    assert isinstance(kept, torch.Tensor) and kept.dtype == torch.uint8 and np.array_equal(kept.numpy(), hwc)


# ---------------------------------------------------------------------------------------------- writing

@pytest.mark.parametrize('background', [False, True])
def test_streaming_writer_chunks_single_frames_and_atomicity(tmp_path, background):
    frames = flat_frames(20)
    path = tmp_path / 'v.mp4'
    with VideoWriter(path, fps=10, pix_fmt='yuv444p', options={'qp': 0}, background=background) as w:
        w.write(frames[:7])                 # a chunk
        for f in frames[7:]: w.write(f)     # single frames
        assert files_in(tmp_path) != ['v.mp4'] and not path.exists()
    assert files_in(tmp_path) == ['v.mp4'] and w.num_frames == 20
    back = np.stack(list(iter_video_frames(path, as_array=True)))
    assert back.shape == frames.shape and np.abs(back.astype(int) - frames).max() <= 2


@pytest.mark.parametrize('background', [False, True])
def test_failures_leave_nothing_behind(tmp_path, background):
    def producer():
        yield np.zeros((8, 8, 3), np.uint8)
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / 'a.mp4', producer(), background=background)
    with pytest.raises(ValueError, match='must share one size'):
        write_video(tmp_path / 'b.mp4', [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)], background=background)
    with pytest.raises(ValueError, match='no frames were written'):
        write_video(tmp_path / 'c.mp4', iter([]), background=background)
    with pytest.raises(ValueError, match='even width and height'):
        write_video(tmp_path / 'd.mp4', np.zeros((2, 7, 8, 3), np.uint8), background=background)
    with pytest.raises(ValueError, match=r'uint8 \[H, W, 3\]'):
        write_video(tmp_path / 'e.mp4', np.zeros((2, 8, 8, 3), np.float32), background=background)
    assert files_in(tmp_path) == []
    # an existing file is replaced only by a complete new one
    write_video(tmp_path / 'keep.mp4', flat_frames(3, 8))
    before = (tmp_path / 'keep.mp4').read_bytes()
    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / 'keep.mp4', producer(), background=background)
    assert files_in(tmp_path) == ['keep.mp4'] and (tmp_path / 'keep.mp4').read_bytes() == before


def test_background_encoder_error_surfaces_and_does_not_hang(tmp_path):
    w = VideoWriter(tmp_path / 'x.mp4', background=True, queue_size=1)
    w.write(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match='must share one size|encoding .* failed'):
        for _ in range(50):  # the size error happens in the thread; a later write or close reports it
            w.write(np.zeros((10, 8, 3), np.uint8))
        w.close()
    w.abort()
    assert files_in(tmp_path) == [] and not any(t.name.startswith('VideoWriter(') for t in threading.enumerate())


def test_background_writer_gives_the_same_video(tmp_path):
    frames = flat_frames(30, 16)
    a = write_video(tmp_path / 'a.mp4', frames)
    b = write_video(tmp_path / 'b.mp4', (frames[i:i + 4] for i in range(0, 30, 4)), background=True)
    da, db = (np.stack(list(iter_video_frames(p, as_array=True))) for p in (a, b))
    assert np.array_equal(da, db)


def test_write_video_other_containers_and_codecs(tmp_path):
    frames = flat_frames(6, 16)
    for name, codec in [('a.webm', 'libvpx-vp9'), ('a.mkv', 'libx264'), ('a.avi', 'mpeg4')]:
        write_video(tmp_path / name, frames, codec=codec)
        assert probe_video(tmp_path / name).num_frames == 6 and probe_video(tmp_path / name)[1:3] == (16, 16)
    with pytest.raises(ValueError, match='cannot write a video'):
        write_video(tmp_path / 'a.notavideo', frames)


# ---------------------------------------------------------------------------------------------- reading

def test_probe_and_errors_name_the_file(tmp_path):
    p = write_video(tmp_path / 'v.mp4', flat_frames(9, 16), fps=12)
    assert probe_video(p) == (9, 16, 16, 12.0)
    assert probe_video(p.read_bytes()) == (9, 16, 16, 12.0)
    (tmp_path / 'bad.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42' + bytes(100))
    for fn in (probe_video, frame_pts, lambda s: list(iter_video_frames(s)), lambda s: read_video_frames(s, [0])):
        with pytest.raises(VideoReadError, match='bad.mp4'):
            fn(tmp_path / 'bad.mp4')
    with pytest.raises(VideoReadError, match=r'clip.mp4 \(in d.zip\)'):
        probe_video(b'junk', where='clip.mp4 (in d.zip)')
    with pytest.raises(FileNotFoundError, match='does not exist'):
        probe_video(tmp_path / 'missing.mp4')
    with pytest.raises(VideoReadError, match='is not a file'):
        probe_video(tmp_path)
    assert issubclass(VideoReadError, ValueError)
    assert video.VIDEO_EXTENSIONS == ('.avi', '.mkv', '.mov', '.mp4', '.webm')


@pytest.mark.parametrize('gop', [16, 50])
def test_seeking_gives_the_frames_decoding_from_the_start_gives(tmp_path, gop):
    frames = flat_frames(300, 32, seed=gop)
    p = write_video(tmp_path / 'long.mp4', frames, options={'g': gop})
    pts = frame_pts(p)[0]
    assert len(pts) == 300
    rng = random.Random(gop)
    cases = [[0], [299], [298, 299], [5, 5, 1], [16, 17, 48], [31, 32, 33]]
    cases += [sorted(rng.sample(range(s, min(s + 33, 300)), 3)) for s in (rng.randrange(300) for _ in range(20))]
    for idx in cases:
        sought = read_video_frames(p, idx, pts)
        scanned = read_video_frames(p, idx, seek=False)
        assert all(np.array_equal(a, b) for a, b in zip(sought, scanned)), idx
        assert all(np.abs(a.astype(int) - frames[i]).mean() < 6 for a, i in zip(sought, idx)), idx
    data = p.read_bytes()  # a zip member is decoded from bytes the same way
    assert all(np.array_equal(a, b) for a, b in zip(read_video_frames(data, [250, 270], pts), read_video_frames(p, [250, 270], pts)))
    with pytest.raises(VideoReadError, match='frame 300 was requested'):
        read_video_frames(p, [290, 300], pts)


def test_wrong_timestamps_fall_back_to_decoding_from_the_start(tmp_path):
    frames = flat_frames(60, 16)
    p = write_video(tmp_path / 'v.mp4', frames, options={'g': 8})
    pts = frame_pts(p)[0]
    bogus = pts + 7  # matches no decoded frame: the reader must notice and not return wrong frames
    got = read_video_frames(p, [40, 41], bogus)
    assert all(np.array_equal(a, b) for a, b in zip(got, read_video_frames(p, [40, 41], seek=False)))
