"""Reading video datasets (stylegan_v.data.dataset) and sampling frame times (stylegan_v.data.sampling).

Fixtures are built in tmp_path with PIL, zipfile and PyAV; the metric-parity set1 data checks the original's layout.
"""
import collections
import itertools
import json
import pickle
import random
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_v.data.dataset import (DatasetError, FrameImageDataset, InfiniteSampler, VideoDataset, VideoSource,
                                     make_training_loader)
from stylegan_v.data import video
from stylegan_v.data.sampling import (POWERS_OF_TWO, SamplingConfig, VideoTooShortError, consecutive_frame_times,
                                      random_frame_times, sample_frame_times, uniform_frame_times)


# ---------------------------------------------------------------------------------------------- fixtures / helpers

def colour(video, frame):
    return ((video * 40 + 10) % 256, frame * 10 + 5, 200)


def write_frames(root, lengths=(5, 8, 2), size=(8, 8), ext='png', names=None):
    """root/<video>/<frame>.<ext>: flat colour(video, frame), with a black left column so mirroring is visible."""
    for v, n in enumerate(lengths):
        d = root / (names[v] if names else f'{v:06d}')
        d.mkdir(parents=True, exist_ok=True)
        for f in range(n):
            arr = np.empty((size[1], size[0], 3), np.uint8)
            arr[:] = colour(v, f)
            arr[:, 0] = 0
            Image.fromarray(arr).save(d / f'{f:06d}.{ext}', quality=100)
    return root


def zip_dir(src, dst, root=True, dir_entries=True):
    with zipfile.ZipFile(dst, 'w') as z:
        if root and dir_entries:
            z.writestr(src.name + '/', b'')
        for p in sorted(src.rglob('*')):
            arc = (src.name + '/' if root else '') + p.relative_to(src).as_posix()
            if p.is_dir():
                if dir_entries:
                    z.writestr(arc + '/', b'')
            else:
                z.write(p, arc)
    return dst


def write_video(path, num_frames, size=(16, 16), codec='libx264'):
    """A clip whose frame i is flat red = 20*i (so a decoded frame tells its index)."""
    frames = np.zeros((num_frames, size[1], size[0], 3), np.uint8)
    frames[..., 0] = 20 * np.arange(num_frames)[:, None, None]
    lossless = codec == 'libx264'
    return video.write_video(path, frames, fps=10, codec=codec, pix_fmt='yuv444p' if lossless else 'yuv420p',
                             options={'qp': 0} if lossless else None)


def quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return fn(*a, **kw)


def frame_ids(image):
    """Green channel at a non-black pixel -> the frame index colour() encoded; red -> the video."""
    return ((image[..., 1, 0, 1].long() - 5) // 10).tolist(), ((image[..., 0, 0, 1].long() - 10) // 40).tolist()


@pytest.fixture
def toy(tmp_path):
    return write_frames(tmp_path / 'toy')


@pytest.fixture(scope='module')
def set1(shared_dir):
    path = shared_dir / 'metric-parity' / 'set1'
    assert (path / 'real.zip').is_file(), f"metric-parity set1 missing under {path}"
    return path


# ---------------------------------------------------------------------------------------------- bad input

def test_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.zip does not exist'):
        VideoDataset(tmp_path / 'nope.zip')


def test_empty_directory(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DatasetError, match=r'empty: no frames or video files found; expected <root>/<video>/<frame>'):
        VideoDataset(tmp_path / 'empty')


def test_zip_without_images(tmp_path):
    with zipfile.ZipFile(tmp_path / 'docs.zip', 'w') as z:
        z.writestr('docs/', b'')
        z.writestr('docs/readme.txt', b'hello')
    with pytest.raises(DatasetError, match='docs.zip: no frames or video files found'):
        VideoDataset(tmp_path / 'docs.zip')


def test_corrupt_zip(tmp_path, toy):
    data = zip_dir(toy, tmp_path / 'toy.zip').read_bytes()
    (tmp_path / 'cut.zip').write_bytes(data[: len(data) // 3])  # central directory gone
    with pytest.raises(DatasetError, match='cut.zip is not a readable zip archive'):
        VideoDataset(tmp_path / 'cut.zip')


def test_not_a_dataset_file(tmp_path):
    (tmp_path / 'x.txt').write_text('x')
    with pytest.raises(DatasetError, match='neither a directory nor a .zip'):
        VideoDataset(tmp_path / 'x.txt')


@pytest.mark.parametrize('as_zip', [False, True])
def test_truncated_jpeg_is_named_when_loaded(tmp_path, as_zip):
    root = write_frames(tmp_path / 'jpg', lengths=(4, 4), size=(32, 32), ext='jpg')
    bad = root / '000001' / '000002.jpg'
    bad.write_bytes(bad.read_bytes()[:300])
    path = zip_dir(root, tmp_path / 'jpg.zip') if as_zip else root
    ds = VideoDataset(path, load_n_consecutive=4, load_n_consecutive_random_offset=False)  # opens fine: header is intact
    ds[0]
    with pytest.raises(DatasetError, match=r'cannot decode frame .*000001/000002\.jpg'):
        ds[1]


def test_mixed_resolutions(tmp_path):
    root = write_frames(tmp_path / 'mixed', lengths=(3, 3))
    write_frames(tmp_path / 'other', lengths=(3, 3), size=(12, 8))
    (root / '000001').rename(tmp_path / 'gone')
    (tmp_path / 'other' / '000001').rename(root / '000001')
    with pytest.raises(DatasetError, match=r'video 000001 has 8x12 \(HxW\) frames but video 000000 has 8x8'):
        VideoDataset(root)
    # a frame of another size inside a video is caught when it is loaded, naming the file
    root2 = write_frames(tmp_path / 'inner', lengths=(3,))
    Image.new('RGB', (9, 9)).save(root2 / '000000' / '000001.png')
    ds = VideoDataset(root2, load_n_consecutive=3)
    with pytest.raises(DatasetError, match=r'000000/000001\.png has shape \[3, 9, 9\] .* dataset\'s frames are \[3, 8, 8\]'):
        ds[0]


def test_non_square_frames_are_accepted(tmp_path):
    root = write_frames(tmp_path / 'wide', lengths=(4,), size=(10, 6))
    ds = VideoDataset(root, resolution=(6, 10))
    assert ds.image_shape == [3, 6, 10]
    assert ds.get_clip(0, rng=0)['image'].shape == (3, 3, 6, 10)
    with pytest.raises(DatasetError, match='6x10 .*needs square frames'):
        ds.resolution


def test_requested_resolution_resizes_on_the_fly(toy):
    with pytest.warns(UserWarning, match=r'3 of 3 videos \(e.g. 000000, 8x8 HxW\) are smaller than resolution=16 and are upsampled'):
        up = VideoDataset(toy, resolution=16, load_n_consecutive=2)
    assert up.image_shape == [3, 16, 16] and up[0]['image'].shape == (2, 3, 16, 16)
    down = quiet(FrameImageDataset, toy, resolution=4)
    assert down.image_shape == [3, 4, 4] and down[0]['image'].shape == (3, 4, 4)
    with pytest.raises(DatasetError, match=r'frames are 8x8 \(HxW\) but resolution=\(8, 16\) was requested'):
        VideoDataset(toy, resolution=(8, 16))
    assert quiet(VideoDataset, toy, resolution=8).resolution == 8


def _crop_resize(frame_hwc, size):
    return np.asarray(Image.fromarray(frame_hwc).crop(_centre_box(*frame_hwc.shape[:2])).resize((size, size), Image.LANCZOS))


def _centre_box(h, w):
    s = min(h, w)
    return ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)


def test_raw_footage_of_mixed_sizes_loads_with_a_resolution(tmp_path):
    "Three clips (96x64 landscape, 64x48 letterboxed, 80x80 square): frames centre-cropped and resized like the footage."
    rng = np.random.default_rng(0)
    sources = {}
    for name, (h, w) in {'hd': (64, 96), 'letterbox': (48, 64), 'square': (80, 80)}.items():
        # smooth content (blurred noise + a moving bar), so a lossy codec keeps it close
        base = np.asarray(Image.fromarray(rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC))
        frames = np.repeat(base[None], 12, 0).copy()
        for t in range(12): frames[t, :, 4 * t:4 * t + 6] = (250, 250, 40)
        if name == 'letterbox': frames[:, :6] = frames[:, -6:] = 0
        sources[name + '.mp4'] = frames
        video.write_video(tmp_path / 'raw' / f'{name}.mp4', frames, fps=10)
    with pytest.raises(DatasetError, match=r'video letterbox.mp4 has 48x64 \(HxW\) frames but video hd.mp4 has 64x96.*resolution=N'):
        VideoDataset(tmp_path / 'raw')
    with pytest.warns(UserWarning, match='letterbox.mp4'):
        ds = VideoDataset(tmp_path / 'raw', resolution=64, load_n_consecutive=12)
    assert ds.video_names == ['hd.mp4', 'letterbox.mp4', 'square.mp4'] and ds.image_shape == [3, 64, 64]
    for i, name in enumerate(ds.video_names):
        clip = ds[i]['image'].permute(0, 2, 3, 1).numpy().astype(int)
        want = np.stack([_crop_resize(f, 64) for f in sources[name]]).astype(int)
        assert clip.shape == want.shape == (12, 64, 64, 3)
        assert np.abs(clip - want).mean() < 5, (name, np.abs(clip - want).mean())  # within codec tolerance
        decoded = video.read_video_frames(tmp_path / 'raw' / name, [3, 7], seek=False)  # exactly the decoded frame, cropped+resized
        assert all(np.array_equal(clip[t], _crop_resize(d, 64)) for t, d in zip([3, 7], decoded))
        # and the crop really is the centre: the same frame without cropping would be far off
        squashed = np.stack([np.asarray(Image.fromarray(f).resize((64, 64), Image.LANCZOS)) for f in sources[name]]).astype(int)
        if name != 'square.mp4': assert np.abs(clip - squashed).mean() > 2 * np.abs(clip - want).mean()
    # training clips and the training loader work on it too
    train = quiet(VideoDataset, tmp_path / 'raw', resolution=32, sampling={'num_frames_per_video': 3, 'max_dist': 8})
    assert train.get_clip(1, rng=0)['image'].shape == (3, 3, 32, 32)
    batch = next(iter(quiet(make_training_loader, tmp_path / 'raw', batch_size=2, num_workers=0, resolution=32)))
    assert batch['image'].shape == (2, 3, 3, 32, 32)


def test_video_file_clips_from_seeking_match_decoding_from_the_start(tmp_path):
    frames = np.zeros((400, 16, 16, 3), np.uint8)
    frames[..., 0] = (np.arange(400) * 37 % 256)[:, None, None]
    frames[..., 1] = (np.arange(400) // 2)[:, None, None]
    video.write_video(tmp_path / 'long' / 'a.mp4', frames, fps=25, options={'g': 16})
    ds = VideoDataset(tmp_path / 'long', sampling={'num_frames_per_video': 3, 'max_dist': 32})
    scan = VideoDataset(tmp_path / 'long', sampling={'num_frames_per_video': 3, 'max_dist': 32})
    scan.source.seek = False
    for k in range(15):
        a, b = ds.get_clip(0, rng=k), scan.get_clip(0, rng=k)
        assert torch.equal(a['times'], b['times']) and torch.equal(a['image'], b['image'])
    assert len(ds.source._pts[0]) == 400  # the timestamps were read once and kept


@pytest.mark.parametrize('mode', ['L', 'RGBA', 'LA', 'P'])
def test_greyscale_and_alpha_frames(tmp_path, mode):
    root = tmp_path / mode
    (root / 'v').mkdir(parents=True)
    for f in range(3):
        Image.new('RGB', (8, 8), (100, 150, 200)).convert(mode).save(root / 'v' / f'{f}.png')
    clip = VideoDataset(root, load_n_consecutive=3)[0]['image']
    assert clip.shape == (3, 3, 8, 8) and clip.dtype == torch.uint8
    with pytest.raises(DatasetError, match=rf"v/0\.png has PIL mode '{mode}'; expected RGB"):
        VideoDataset(root, load_n_consecutive=3, color='reject')
    if mode == 'L':  # the original's behaviour: keep one channel
        assert VideoDataset(root, load_n_consecutive=3, color='keep')[0]['image'].shape == (3, 1, 8, 8)


def test_video_shorter_than_sampler(toy):
    with pytest.warns(UserWarning, match=r'skipping 1 of 3 videos shorter than the 3 frames .*000002 with 2'):
        ds = VideoDataset(toy)
    assert ds.video_names == ['000000', '000001']
    with pytest.raises(VideoTooShortError, match=r'video 000002 of .* has 2 frames, but random sampling of 3 frames needs at least 3 frames'):
        VideoDataset(toy, short_videos='error')
    with pytest.raises(VideoTooShortError, match='at least 16 frames'):
        VideoDataset(toy, load_n_consecutive=16, discard_short_videos=False)
    with pytest.raises(VideoTooShortError, match='all 3 videos are shorter than the 16 frames'):
        VideoDataset(toy, load_n_consecutive=16, discard_short_videos=True)
    # the bare samplers raise the same clear error, never an IndexError from deep inside
    for call in [lambda: random_frame_times(2, 3, rng=0), lambda: uniform_frame_times(2, 3, rng=0),
                 lambda: consecutive_frame_times(10, 16, rng=0), lambda: random_frame_times(0, 1, rng=0)]:
        with pytest.raises(VideoTooShortError):
            call()


def test_labels_per_video_one_hot_and_vectors(toy):
    (toy / 'dataset.json').write_text(json.dumps({'labels': [[f'{v:06d}/{f:06d}.png', [2, 0, 1][v]]
                                                             for v, n in enumerate((5, 8, 2)) for f in range(n)]}))
    ds = VideoDataset(toy, use_labels=True, sampling={'num_frames_per_video': 2})
    assert ds.c_dim == 3 and ds.has_labels
    assert [ds.get_label(i).tolist() for i in range(3)] == [[0, 0, 1], [1, 0, 0], [0, 1, 0]]
    batch = ds.get_clip(0, rng=0)
    assert batch['label'].dtype == torch.float32 and batch['label'].tolist() == [0, 0, 1]
    assert VideoDataset(toy, sampling={'num_frames_per_video': 2}).c_dim == 0  # labels only when asked for
    (toy / 'dataset.json').write_text(json.dumps({'labels': [['000000', [0.5, 1.5]], ['000001', [1, 2]], ['000002', [0, 0]]]}))
    ds = VideoDataset(toy, use_labels=True, sampling={'num_frames_per_video': 2})
    assert ds.get_label(0).tolist() == [0.5, 1.5] and ds.get_label(0).dtype == np.float32
    assert FrameImageDataset(toy, use_labels=True)[5]['label'].tolist() == [1, 2]  # frame 0 of video 1


def test_labels_errors(toy):
    def write(labels):
        (toy / 'dataset.json').write_text(json.dumps({'labels': labels}))
    write([['000000', 0], ['000001', 1], ['000002', 1], ['000009', 0]])
    with pytest.raises(DatasetError, match=r"dataset.json names 1 video\(s\) that are not in the dataset: \['000009'\]"):
        VideoDataset(toy, use_labels=True, short_videos='skip')
    write([['000000', 0], ['000001', 1]])
    with pytest.raises(DatasetError, match=r"no label for 1 video\(s\): \['000002'\]"):
        quiet(VideoDataset, toy, use_labels=True)
    write([['000000', [1, 2]], ['000001', [1, 2, 3]], ['000002', [0, 0]]])
    with pytest.raises(DatasetError, match='video 000001 has 3 values but video 000000 has 2'):
        quiet(VideoDataset, toy, use_labels=True)
    (toy / 'dataset.json').write_text('{"labels": [["000000", 0],')
    with pytest.raises(DatasetError, match='dataset.json is not valid JSON'):
        quiet(VideoDataset, toy, use_labels=True)
    (toy / 'dataset.json').unlink()
    with pytest.raises(DatasetError, match='no dataset.json at the dataset root'):
        quiet(VideoDataset, toy, use_labels=True)


def test_unreadable_video_file(tmp_path):
    (tmp_path / 'clips').mkdir()
    write_video(tmp_path / 'clips' / 'good.mp4', 4)
    (tmp_path / 'clips' / 'broken.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42' + bytes(200))
    with pytest.raises(DatasetError, match=r'1 of 2 videos are unreadable, more than max_bad_fraction=0.01 .*cannot open video .*broken\.mp4'):
        VideoDataset(tmp_path / 'clips')
    with pytest.warns(UserWarning, match=r'leaving out 1 of 2 videos that cannot be read: cannot open video .*broken\.mp4'):
        ds = VideoDataset(tmp_path / 'clips', max_bad_fraction=0.5, sampling={'num_frames_per_video': 2})
    assert ds.video_names == ['good.mp4'] and [n for n, _ in ds.source.unreadable] == ['broken.mp4']


# ---------------------------------------------------------------------------------------------- layouts and parity

def test_set1_real_dir_and_zip_give_identical_tensors(set1):
    views = {p: VideoDataset(set1 / p, load_n_consecutive=16, discard_short_videos=True) for p in ('real', 'real.zip')}
    a, b = views['real'], views['real.zip']
    assert len(a) == len(b) == 48 and a.video_names == b.video_names
    for i in range(48):
        x, y = a[i], b[i]
        assert torch.equal(x['image'], y['image']) and torch.equal(x['times'], torch.arange(16))
        assert x['image'].shape == (16, 3, 128, 128) and x['video_len'] == 16
    fa, fb = FrameImageDataset(set1 / 'real', resolution=128), FrameImageDataset(set1 / 'real.zip', resolution=128)
    assert len(fa) == len(fb) == 768
    for i in range(0, 768, 7):
        assert torch.equal(fa[i]['image'], fb[i]['image'])
    # frame order: item 16*v + t of the image view is frame t of video v
    assert torch.equal(fa[16 * 3 + 5]['image'], a[3]['image'][5])
    png = set1 / 'real' / '000003' / '000005.png'
    assert torch.equal(fa[16 * 3 + 5]['image'], torch.from_numpy(np.array(Image.open(png).convert('RGB'))).permute(2, 0, 1))


@pytest.mark.parametrize('root,dir_entries', [(True, True), (True, False), (False, True), (False, False)])
def test_zip_layouts_without_root_or_directory_entries(tmp_path, toy, root, dir_entries):
    z = zip_dir(toy, tmp_path / 'toy.zip', root=root, dir_entries=dir_entries)
    d, zz = (VideoDataset(p, load_n_consecutive=2, load_n_consecutive_random_offset=False) for p in (toy, z))
    assert d.video_names == zz.video_names == ['000000', '000001', '000002']
    for i in range(3):
        assert torch.equal(d[i]['image'], zz[i]['image'])


def test_frames_and_videos_in_sorted_name_order(tmp_path):
    root = write_frames(tmp_path / 'order', lengths=(3, 3), names=['b', 'a'])  # folder 'b' holds video 0's colours
    ds = VideoDataset(root, load_n_consecutive=3, load_n_consecutive_random_offset=False)
    assert ds.video_names == ['a', 'b']
    frames, videos = frame_ids(ds[0]['image'])
    assert frames == [0, 1, 2] and videos == [1, 1, 1]


@pytest.mark.parametrize('codec,ext', [('libx264', 'mp4'), ('libvpx-vp9', 'webm')])
def test_directory_of_video_files(tmp_path, codec, ext):
    d = tmp_path / 'clips'
    d.mkdir()
    for name, n in [('b', 12), ('a', 6)]:
        write_video(d / f'{name}.{ext}', n, codec=codec)
    src = VideoSource(d)
    assert src.names == [f'a.{ext}', f'b.{ext}'] and src.lengths == [6, 12] and src.frame_shape == [3, 16, 16]
    ds = VideoDataset(d, sampling={'num_frames_per_video': 3, 'max_dist': 8})
    rng = random.Random(0)
    for _ in range(5):
        clip = ds.get_clip(1, rng)
        red = clip['image'][:, 0, 8, 8].float()
        tol = 1.5 if codec == 'libx264' else 6
        assert torch.allclose(red, clip['times'].float() * 20, atol=tol), (red, clip['times'])
    img = FrameImageDataset(d)
    assert len(img) == 18
    assert abs(int(img[6 + 7]['image'][0, 8, 8]) - 140) <= 6


def test_zip_of_video_files(tmp_path):
    d = tmp_path / 'mp4s'
    d.mkdir()
    write_video(d / 'x.mp4', 5)
    ds = VideoDataset(zip_dir(d, tmp_path / 'mp4s.zip'), load_n_consecutive=5)
    assert ds.video_names == ['x.mp4']
    assert ds[0]['image'].shape == (5, 3, 16, 16)


# ---------------------------------------------------------------------------------------------- training items

def test_training_clip_contents_and_window(toy):
    ds = VideoDataset(toy, max_num_frames=4, sampling={'num_frames_per_video': 2})
    rng = random.Random(1)
    starts = collections.Counter()
    for _ in range(200):
        clip = ds.get_clip(1, rng)  # the 8-frame video
        assert clip['video_len'] == 4 and clip['times'].dtype == torch.int64
        assert 0 <= clip['times'][0] < clip['times'][1] <= 3
        frames, videos = frame_ids(clip['image'])
        assert videos == [1, 1]
        start = frames[0] - int(clip['times'][0])
        assert frames[1] - int(clip['times'][1]) == start  # times are relative to one window start
        starts[start] += 1
    assert set(starts) == set(range(0, 5))  # window start uniform over [0, len - max_num_frames]
    assert ds.get_video_len(0) == 4 and ds.get_video_len(2) == 2


def test_xflip_doubles_and_mirrors_all_frames(toy):
    ds = VideoDataset(toy, xflip=True, sampling={'num_frames_per_video': 2})
    assert len(ds) == 6
    plain, mirrored = ds.get_clip(1, rng=3)['image'], ds.get_clip(4, rng=3)['image']
    assert torch.equal(mirrored, plain.flip(-1)) and not torch.equal(plain, mirrored)
    assert (mirrored[:, :, :, -1] == 0).all()  # the black column moved to the right in every frame


def test_max_size_subset_is_seeded_and_sorted(tmp_path):
    root = write_frames(tmp_path / 'many', lengths=(3,) * 10, size=(4, 4))
    pick = lambda seed: VideoDataset(root, max_size=4, random_seed=seed).video_names
    assert pick(1) == pick(1) == sorted(pick(1)) and len(pick(1)) == 4
    assert len({tuple(pick(s)) for s in range(6)}) > 1
    assert len(VideoDataset(root, max_size=4, xflip=True)) == 8
    assert len(VideoDataset(root, max_size=50)) == 10


def test_consecutive_view_matches_original_protocol(tmp_path):
    root = write_frames(tmp_path / 'fvd', lengths=(20, 7, 12), size=(4, 4))
    with pytest.warns(UserWarning, match='skipping 1 of 3'):
        ds = VideoDataset(root, load_n_consecutive=4, subsample_factor=2, discard_short_videos=True)
    assert ds.video_names == ['000000', '000002']  # 7 < 4*2 frames: discarded like the original
    for i, length in enumerate([20, 12]):
        frames, _ = frame_ids(ds[i]['image'])
        assert np.all(np.diff(frames) == 2) and 0 <= frames[0] <= length - 8 + 1 and frames[-1] <= length - 1
        assert ds[i]['times'].tolist() == frames  # absolute indices, as in the original
    assert [ds[i]['times'].tolist() for i in range(2)] == [ds[i]['times'].tolist() for i in range(2)]  # fixed per video
    offsets = set()
    for seed in range(300):  # the offset is a fixed function of (random_seed, video); over seeds it covers the original's range
        ds.random_seed = seed
        offsets.add(int(ds.frame_times(0)[0][0]))
    assert offsets == set(range(0, 20 - 4 * 2 + 2))  # randint(0, len - n*s + s - 1)
    fixed = quiet(VideoDataset, root, load_n_consecutive=4, subsample_factor=2, load_n_consecutive_random_offset=False,
                  discard_short_videos=True)
    assert fixed[0]['times'].tolist() == [0, 2, 4, 6]
    with pytest.raises(ValueError, match='subsample_factor > 1 needs load_n_consecutive'):
        VideoDataset(root, subsample_factor=2)


def test_views_share_the_scan(toy):
    ds = quiet(VideoDataset, toy)
    fvd = ds.consecutive_view(2, random_offset=False)
    assert fvd.source is ds.source and len(fvd) == 3 and fvd[2]['times'].tolist() == [0, 1]
    img = ds.image_view()
    assert len(img) == 15 and img.source is ds.source


# ---------------------------------------------------------------------------------------------- samplers

def test_random_sampler_distribution_matches_original():
    rng = random.Random(0)
    spans, middles = collections.Counter(), collections.Counter()
    for _ in range(4000):
        t = random_frame_times(1024, 3, rng=rng)
        spans[int(t[2] - t[0])] += 1
        if t[2] - t[0] == 8:
            middles[int(t[1] - t[0])] += 1
    assert set(spans) == {2, 4, 8, 16, 32}
    assert all(abs(c / 4000 - 0.2) < 0.03 for c in spans.values())  # uniform over the allowed spans
    assert set(middles) == set(range(1, 8))  # middle frame anywhere strictly inside the span
    # a short video only allows the spans that fit: L=6 -> {2, 4}
    assert {int(np.ptp(random_frame_times(6, 3, rng=rng))) for _ in range(300)} == {2, 4}
    # offsets reach both ends: 0 and L-span-1
    assert {int(random_frame_times(10, 2, max_dist=8, total_dists=[8], rng=rng)[0]) for _ in range(200)} == {0, 1}


def test_samplers_are_reproducible_and_fractional():
    for fn in (random_frame_times, uniform_frame_times):
        assert np.array_equal(fn(100, 3, rng=random.Random(7)), fn(100, 3, rng=random.Random(7)))
        t = fn(100, 3, fractional=True, rng=3)
        assert t.dtype == np.float64 and np.allclose(np.diff(t), np.round(np.diff(t)))
        assert 0 <= t[0] and t[-1] <= 99
    t = consecutive_frame_times(40, 4, 3, fractional=True, rng=2)
    assert np.allclose(np.diff(t), 3) and 0 <= t[0] <= 40 - 12 + 2
    assert np.array_equal(sample_frame_times(SamplingConfig(type='uniform'), 50, rng=4),
                          uniform_frame_times(50, 3, rng=4))


def test_uniform_sampler_works_where_original_crashed():
    cfg = SamplingConfig(type='uniform', num_frames_per_video=4, max_dist_between_frames=8)
    rng = random.Random(0)
    strides = collections.Counter()
    for _ in range(500):
        t = cfg.sample(30, rng)
        d = np.diff(t)
        assert (d == d[0]).all() and t[0] >= 0 and t[-1] <= 29
        strides[int(d[0])] += 1
    assert set(strides) == {1, 2, 4, 8}  # (30-1)//3 = 9 allows 8, max_dist_between_frames=8
    assert cfg.min_video_len() == 4
    assert set(POWERS_OF_TWO) >= set(strides)


# ---------------------------------------------------------------------------------------------- loading, workers, DDP

@pytest.mark.parametrize('size,ranks', [(10, 2), (7, 2), (9, 3)])
def test_infinite_sampler_rank_shards_are_disjoint_and_cover(size, ranks):
    streams = [iter(InfiniteSampler(range(size), rank=r, num_replicas=ranks, seed=3)) for r in range(ranks)]
    per_rank = [list(itertools.islice(s, 4 * size)) for s in streams]
    # re-interleave the ranks into the global stream: step k went to rank k % ranks
    total = [per_rank[k % ranks][k // ranks] for k in range(3 * size)]
    for p in range(3):
        chunk = total[p * size:(p + 1) * size]
        assert sorted(chunk) == list(range(size))  # every pass covers the set once: shards disjoint, union = all
    assert total[:size] != total[size:2 * size]  # reshuffled between passes
    first = [set(per_rank[r][: len(range(r, size, ranks))]) for r in range(ranks)]
    assert all(not (first[a] & first[b]) for a in range(ranks) for b in range(a + 1, ranks))


def test_pickled_dataset_drops_and_reopens_zip(tmp_path, toy):
    ds = VideoDataset(zip_dir(toy, tmp_path / 'toy.zip'), load_n_consecutive=2)
    before = ds[0]['image']
    assert ds.source.storage._zip is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.source.storage._zip is None
    assert torch.equal(clone[0]['image'], before)


def test_training_loader_with_workers_is_reproducible(tmp_path, toy):
    z = zip_dir(toy, tmp_path / 'toy.zip', root=False, dir_entries=False)

    def batches(num_workers, rank=0, seed=7):
        loader = quiet(make_training_loader, z, batch_size=2, num_workers=num_workers, seed=seed, rank=rank, num_replicas=2,
                       sampling={'num_frames_per_video': 2})
        loader.dataset[0]  # open the zip in the parent first: workers must not reuse that handle
        it = iter(loader)
        out = [next(it) for _ in range(3)]
        del it
        return out

    a, b = batches(2), batches(2)
    for x, y in zip(a, b):
        assert torch.equal(x['image'], y['image']) and torch.equal(x['times'], y['times'])
    x = a[0]
    assert x['image'].shape == (2, 2, 3, 8, 8) and x['label'].shape == (2, 0) and x['video_len'].shape == (2,)
    for img, times in zip(x['image'], x['times']):
        frames, _ = frame_ids(img)
        assert frames == times.tolist()  # no window: videos are shorter than max_num_frames
    c = batches(0, rank=1)
    assert not all(torch.equal(p['times'], q['times']) for p, q in zip(a, c))


def test_training_loaders_of_two_ranks_split_the_videos(tmp_path):
    root = write_frames(tmp_path / 'six', lengths=(3,) * 6, size=(4, 4))
    seen = []
    for rank in range(2):
        it = iter(make_training_loader(root, batch_size=1, num_workers=0, seed=11, rank=rank, num_replicas=2,
                                       sampling={'num_frames_per_video': 2}))
        seen.append([frame_ids(next(it)['image'][0])[1][0] for _ in range(3)])  # red channel -> video number
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(6))


def test_fake_conditions_follow_the_dataset(toy):
    from stylegan_v.data.dataset import sample_fake_conditions
    (toy / 'dataset.json').write_text(json.dumps({'labels': [['000000', 0], ['000001', 1], ['000002', 1]]}))
    ds = VideoDataset(toy, use_labels=True, max_num_frames=6, sampling={'num_frames_per_video': 2})
    c, t = sample_fake_conditions(ds, 64, rng=random.Random(0))
    assert c.shape == (64, 2) and torch.all(c.sum(1) == 1)
    assert t.dtype == torch.float64 and t.shape == (64, 2)
    assert torch.all(t[:, 0] >= 0) and torch.all(t[:, 1] <= 5)  # within min(len, max_num_frames)
    assert torch.allclose(t[:, 1] - t[:, 0], (t[:, 1] - t[:, 0]).round()) and (t[:, 0] != t[:, 0].round()).any()
