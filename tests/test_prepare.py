"""Dataset preparation (`stylegan-v prepare ...`) and the built-in synthetic dataset."""
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from stylegan_v.data import prepare
from stylegan_v.data.layout import DatasetLayout, DatasetWriter, decode_frame, encode_frame
from stylegan_v.data.prepare import cli_main
from stylegan_v.data.video import iter_video_frames, write_video
from stylegan_v.data.synthetic import synthetic_video, write_synthetic_dataset, video_recipe


def moving_clip(num_frames=12, height=48, width=64, seed=0):
    "A bright square moving over a noisy background: easy to check positions after cropping."
    rng = np.random.default_rng(seed)
    clip = np.repeat(rng.integers(0, 60, (1, height, width, 3), dtype=np.uint8), num_frames, 0)
    for i in range(num_frames):
        x = (i * 3) % (width - 10)
        clip[i, 10:20, x:x + 10] = 250
    return clip


def frames_of(path):
    "{video: uint8 [F,H,W,3]} of a written dataset."
    with DatasetLayout(path) as lay:
        return {v: np.stack([decode_frame(lay.read_bytes(f)) for f in fs]) for v, fs in lay.videos.items()}


def decoded(path):
    "All frames of a video file as decoded by PyAV: uint8 [F,H,W,3]."
    return np.stack([np.asarray(f) for f in iter_video_frames(path)])


def tree_bytes(path):
    path = Path(path)
    if path.is_file():
        return {'': path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob('*')) if p.is_file()}


# ---------------------------------------------------------------- video: one long video -> chunks

def test_video_chunks_rainbow_jelly_recipe(tmp_path, capsys):
    src = write_video(tmp_path / 'long.mp4', moving_clip(40), fps=24)
    # the RainbowJelly recipe, scaled down: skip 5 frames, 10-frame chunks, square 32 px
    rc = cli_main(['video', '-s', str(src), '-t', str(tmp_path / 'jelly.zip'), '-sf', '5', '-cs', '10',
                   '--target_size', '32', '--ext', 'png'])
    assert rc == 0
    err = capsys.readouterr().err  # what happened to the shape and to the frames that do not fill a chunk is reported
    assert 'long.mp4 is 64x48 (WxH): frames are centre-cropped to 48x48, then resized to 32' in err
    assert 'dropped the last 5 frame(s) of long.mp4: 3 chunk(s) of 10 frames use 30 of the 35 frames after skipping 5' in err
    videos = frames_of(tmp_path / 'jelly.zip')
    assert (tmp_path / 'jelly.zip').is_file()
    assert list(videos) == ['000000', '000001', '000002']          # 35 usable frames: the partial 4th chunk is dropped
    assert all(v.shape == (10, 32, 32, 3) for v in videos.values())
    # chunk 1 frame 0 is source frame 15: centre crop of the 48x64 frame (x 8..56) then resize 48 -> 32
    source = decoded(src)
    ref = np.asarray(PIL.Image.fromarray(source[15, :, 8:56]).resize((32, 32), PIL.Image.LANCZOS))
    assert np.abs(videos['000001'][0].astype(int) - ref).max() <= 1      # PNG: exact up to rounding
    wrong = np.asarray(PIL.Image.fromarray(source[14, :, 8:56]).resize((32, 32), PIL.Image.LANCZOS))
    assert np.abs(videos['000001'][0].astype(int) - wrong).mean() > 3   # ...and it is not the neighbour frame


def test_video_num_chunks_and_fps(tmp_path):
    src = write_video(tmp_path / 'v.mp4', moving_clip(24), fps=24)    # 1 s of video
    assert prepare.video_to_dataset(src, tmp_path / 'a', num_chunks=3, target_size=16, progress=False) == 3
    assert [len(v) for v in frames_of(tmp_path / 'a').values()] == [8, 8, 8]
    # resampled to 12 fps: 12 frames -> 2 chunks of 6, each frame one of every 2 source frames
    assert prepare.video_to_dataset(src, tmp_path / 'b', chunk_size=6, fps=12, target_size=48, ext='png',
                                    progress=False) == 2
    b = frames_of(tmp_path / 'b')
    full = np.stack([np.asarray(prepare.crop_then_resize(f, 48)) for f in iter_video_frames(src)])
    assert np.array_equal(b['000001'][0], full[12])


def test_video_errors_name_the_file(tmp_path, capsys):
    src = write_video(tmp_path / 'v.mp4', moving_clip(10), fps=24)
    bad = tmp_path / 'corrupt.mp4'
    bad.write_bytes(os.urandom(2000))
    assert cli_main(['video', '-s', str(tmp_path / 'nope.mp4'), '-t', str(tmp_path / 'o'), '-cs', '4']) == 2
    assert 'nope.mp4 does not exist' in capsys.readouterr().err
    assert cli_main(['video', '-s', str(bad), '-t', str(tmp_path / 'o'), '-cs', '4']) == 2
    assert 'corrupt.mp4' in capsys.readouterr().err
    assert cli_main(['video', '-s', str(src), '-t', str(tmp_path / 'o'), '-cs', '4', '--target_size', '0']) == 2
    assert 'target_size' in capsys.readouterr().err
    assert cli_main(['video', '-s', str(src), '-t', str(tmp_path / 'o'), '-cs', '11']) == 2
    assert 'too few' in capsys.readouterr().err
    # argparse: --num_chunks and --chunk_size are exclusive
    assert cli_main(['video', '-s', str(src), '-t', str(tmp_path / 'o'), '-cs', '4', '-n', '2']) == 2
    assert not (tmp_path / 'o').exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['corrupt.mp4', 'v.mp4']  # no temporaries left


def test_existing_target_refused_unless_overwrite(tmp_path, capsys):
    src = write_video(tmp_path / 'v.mp4', moving_clip(10), fps=24)
    args = ['video', '-s', str(src), '-t', str(tmp_path / 'ds'), '-cs', '5', '--target_size', '16']
    assert cli_main(args) == 0
    before = tree_bytes(tmp_path / 'ds')
    assert cli_main(args) == 2
    assert f"{tmp_path / 'ds'} already exists" in capsys.readouterr().err
    assert tree_bytes(tmp_path / 'ds') == before
    assert cli_main(args[:-2] + ['--target_size', '8', '--force']) == 0
    assert frames_of(tmp_path / 'ds')['000000'].shape == (5, 8, 8, 3)


# ---------------------------------------------------------------- videos: a directory of clips

def test_videos_dir_with_workers_and_broken_report(tmp_path, capsys):
    src = tmp_path / 'clips'
    write_video(src / 'walk#1.mp4', moving_clip(8, 48, 64), fps=24)
    write_video(src / 'run.avi', moving_clip(5, 64, 48, seed=1), fps=24, codec='mpeg4')
    write_video(src / 'tall.mov', moving_clip(6, 64, 32, seed=2), fps=24)
    (src / 'broken.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42' + os.urandom(500))
    (src / 'readme.txt').write_text('not a video')
    args = ['videos', '-s', str(src), '-o', str(tmp_path / 'out.zip'), '--target_size', '24', '--num_workers', '2', '--ext', 'png']
    assert cli_main(args) == 2  # a broken input stops the run before any work...
    err = capsys.readouterr().err
    assert '1 of the 4 videos' in err and 'broken.mp4' in err and '--allow-broken' in err and 'Traceback' not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['clips']
    assert cli_main(args + ['--allow-broken']) == 0  # ...unless allowed
    err = capsys.readouterr().err
    assert 'broken.mp4' in err and 'out_broken.json' in err
    assert 'note: 3 of 3 videos are not square' in err
    report = json.loads((tmp_path / 'out_broken.json').read_text())
    assert list(report) == [str(src / 'broken.mp4')]
    videos = frames_of(tmp_path / 'out.zip')
    assert {k: v.shape for k, v in videos.items()} == {'walk_1': (8, 24, 24, 3), 'run': (5, 24, 24, 3),
                                                       'tall': (6, 24, 24, 3)}
    # short side resized to 24 then centre-cropped: the 48x64 frame becomes 24x32, crop x 4..28
    ref = np.asarray(PIL.Image.fromarray(decoded(src / 'walk#1.mp4')[3]).resize((32, 24), PIL.Image.LANCZOS))[:, 4:28]
    assert np.abs(videos['walk_1'][3].astype(int) - ref).max() <= 1
    # fixed input, converted again: the stale report goes away
    (src / 'broken.mp4').unlink()
    assert cli_main(['videos', '-s', str(src), '-t', str(tmp_path / 'out.zip'), '--force', '--num_workers', '0']) == 0
    assert not (tmp_path / 'out_broken.json').exists()


_HELD = __import__('threading').Lock()  # held by the test process while workers run


def _lock_is_free(task):
    "Worker: can this process take `_HELD`? (A fork of the test process would inherit it held.)"
    got = _HELD.acquire(timeout=2)
    if got: _HELD.release()
    return task, got


def _die_on_two(task):
    "Worker: dies without a word on task 2, as a process killed for memory does."
    if task[1] == 2: os.kill(os.getpid(), signal.SIGKILL)
    return task


def test_workers_do_not_inherit_this_process_s_locks():
    # A thread of this process (a decoder, a kernel client, torch) may hold a lock at the instant the workers start;
    # a worker forked then would wait on it forever, which is how a CI run hung here. Workers start fresh instead.
    with _HELD:
        out = list(prepare._map_tasks(_lock_is_free, [('a', 0), ('b', 1), ('c', 2)], 2))
    assert out == [(('a', 0), True), (('b', 1), True), (('c', 2), True)]


def test_a_worker_that_dies_is_an_error_naming_the_clip_not_a_hang():
    tasks = [(f'clip{i}.mp4', i) for i in range(6)]
    got = []
    with pytest.raises(prepare.WorkerDied, match=r'while converting clip[0-2]\.mp4.*num_workers=0'):
        for r in prepare._map_tasks(_die_on_two, tasks, 2): got.append(r)
    assert got == tasks[:len(got)] and len(got) <= 2  # results before the death arrive in order


def test_videos_dir_errors(tmp_path, capsys):
    assert cli_main(['videos', '-s', str(tmp_path / 'missing'), '-t', str(tmp_path / 'o')]) == 2
    assert 'missing does not exist' in capsys.readouterr().err
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'x.txt').write_text('')
    assert cli_main(['videos', '-s', str(tmp_path / 'empty'), '-t', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert 'no videos' in err and str(tmp_path / 'empty') in err
    (tmp_path / 'bad').mkdir()
    (tmp_path / 'bad' / 'a.mp4').write_bytes(b'garbage')
    assert cli_main(['videos', '-s', str(tmp_path / 'bad'), '-t', str(tmp_path / 'o'), '--num_workers', '0']) == 2
    assert '1 of the 1 videos in' in capsys.readouterr().err
    assert not (tmp_path / 'o').exists() and not (tmp_path / 'o_broken.json').exists()
    assert cli_main(['videos', '-s', str(tmp_path / 'bad'), '-t', str(tmp_path / 'o'), '--num_workers', '0', '--allow-broken']) == 2
    assert 'none of the 1 videos' in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()
    assert str(tmp_path / 'bad' / 'a.mp4') in json.loads((tmp_path / 'o_broken.json').read_text())


# ---------------------------------------------------------------- the atomic writer

def test_failed_conversion_leaves_nothing_under_the_final_name(tmp_path):
    # a source dataset whose 3rd video has a corrupt frame: resizing fails midway through the conversion
    with DatasetWriter(tmp_path / 'src', ext='png') as w:
        for v in range(4):
            w.add_video(f'{v:06d}', [np.full((8, 8, 3), 20 * i, np.uint8) for i in range(3)])
    (tmp_path / 'src' / '000002' / '000001.png').write_bytes(b'not a png')
    for target in ('out', 'out.zip'):
        assert cli_main(['crop', str(tmp_path / 'src'), '-t', str(tmp_path / target), '--resize', '4']) == 2
        assert not (tmp_path / target).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['src']   # no partial temporaries either
    # an overwrite that fails keeps the old dataset intact
    write_synthetic_dataset(tmp_path / 'old.zip', num_videos=2, num_frames=2, resolution=8, progress=False)
    before = (tmp_path / 'old.zip').read_bytes()
    assert cli_main(['crop', str(tmp_path / 'src'), '-t', str(tmp_path / 'old.zip'), '--resize', '4',
                     '--force']) == 2
    assert (tmp_path / 'old.zip').read_bytes() == before


def test_killed_run_leaves_nothing_under_the_final_name(tmp_path):
    target = tmp_path / 'big.zip'
    code = ('from stylegan_v.data.synthetic import write_synthetic_dataset as w; '
            f'w({str(target)!r}, num_videos=2000, num_frames=16, resolution=64, progress=False)')
    proc = subprocess.Popen([sys.executable, '-c', code])
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until it is writing its temporary
            partial = [p for p in tmp_path.iterdir() if p.name.endswith('.partial')]
            if partial and partial[0].stat().st_size > 100_000:
                break
            time.sleep(0.05)
        assert proc.poll() is None, 'the writer finished before it could be killed'
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not target.exists()
    assert [p.name.startswith('.big.zip.') for p in tmp_path.iterdir()] == [True]  # only the hidden temporary


def test_zip_layout_is_what_the_reader_needs(tmp_path):
    write_synthetic_dataset(tmp_path / 'synth.zip', num_videos=3, num_frames=2, resolution=8, labels=True,
                            progress=False)
    with zipfile.ZipFile(tmp_path / 'synth.zip') as z:
        names = sorted(z.namelist())
        meta = json.loads(z.read('synth/dataset.json'))
    assert names[0] == 'synth/'                                    # single root folder, first in sorted order
    assert {n.split('/')[0] for n in names} == {'synth'}
    assert [n for n in names if n.endswith('/')] == ['synth/', 'synth/000000/', 'synth/000001/', 'synth/000002/']
    frames = [n for n in names if n.endswith('.png')]
    assert len(frames) == 6 and all(len(n.split('/')) == 3 for n in frames)
    assert meta == {'labels': [[f'{i:06d}', video_recipe((0, i))['label']] for i in range(3)]}


def test_jpeg_quality_is_honoured(tmp_path):
    frame = synthetic_video(3, 1, 64)[0]
    sizes = {q: len(encode_frame(frame, 'jpg', q)) for q in (50, 75, 95)}
    assert sizes[50] < sizes[75] < sizes[95]
    src = write_video(tmp_path / 'v.mp4', synthetic_video(3, 8, 64), fps=24)
    for q in (50, 95):
        assert cli_main(['video', '-s', str(src), '-t', str(tmp_path / f'q{q}'), '-cs', '8', '--target_size', '64',
                         '--quality', str(q)]) == 0
    data = {q: (tmp_path / f'q{q}' / '000000' / '000000.jpg').read_bytes() for q in (50, 95)}
    assert len(data[50]) < len(data[95])
    decoded = np.asarray(next(iter_video_frames(src)))
    err = {q: np.abs(decode_frame(d).astype(int) - decoded).mean() for q, d in data.items()}
    assert err[95] < err[50]
    # PNG is lossless
    assert cli_main(['video', '-s', str(src), '-t', str(tmp_path / 'png'), '-cs', '8', '--target_size', '64',
                     '--ext', 'png']) == 0
    assert np.array_equal(decode_frame((tmp_path / 'png' / '000000' / '000000.png').read_bytes()), decoded)


# ---------------------------------------------------------------- crop, faces, static

def test_crop_slices_and_resizes(tmp_path):
    write_synthetic_dataset(tmp_path / 'synth', num_videos=2, num_frames=10, resolution=32, labels=True,
                            progress=False)
    assert cli_main(['crop', str(tmp_path / 'synth'), '-n', '4', '--slice_n_left_frames', '3']) == 0
    out = tmp_path / 'synth_cut4_slice3'
    src, cut = frames_of(tmp_path / 'synth'), frames_of(out)
    assert np.array_equal(cut['000001'], src['000001'][3:7])     # frames copied unchanged
    assert DatasetLayout(out).video_labels() == DatasetLayout(tmp_path / 'synth').video_labels()
    assert cli_main(['crop', str(tmp_path / 'synth'), '-t', str(tmp_path / 'small.zip'), '--resize', '16']) == 0
    assert frames_of(tmp_path / 'small.zip')['000000'].shape == (10, 16, 16, 3)
    assert cli_main(['crop', str(tmp_path / 'nothing')]) == 2


def test_faces_per_frame_and_wide_crop(tmp_path):
    n, h, w = 6, 48, 64
    vid = np.full((n, h, w, 3), 30, np.uint8)
    msk = np.full((n, h, w, 3), 255, np.uint8)
    for i in range(n):  # a textured 'face' moving right, and its (white-background) mask
        x = 4 + 6 * i
        vid[i, 10:30, x:x + 20] = np.tile(np.array([[200], [90]] * 10, np.uint8), (1, 20))[..., None]
        msk[i, 10:30, x:x + 20] = 0
    for kind, arr in (('original', vid), ('mask', msk)):
        write_video(tmp_path / 'ffs' / 'train' / kind / 'c1.mp4', arr, fps=10, pix_fmt='yuv444p', options={'qp': 0})
    write_video(tmp_path / 'ffs' / 'train' / 'original' / 'nomask.mp4', vid, fps=10)
    base = ['faces', '-s', str(tmp_path / 'ffs'), '--img_size', '20', '--ext', 'png', '--num_workers', '0']
    assert cli_main(base + ['-t', str(tmp_path / 'per_frame')]) == 2   # nomask.mp4 has no mask: refused...
    assert not (tmp_path / 'per_frame').exists()
    base.append('--allow-broken')                                      # ...unless allowed
    assert cli_main(base + ['-t', str(tmp_path / 'per_frame')]) == 0
    assert cli_main(base + ['-t', str(tmp_path / 'wide'), '--wide_crop']) == 0
    per_frame, wide = frames_of(tmp_path / 'per_frame')['c1'], frames_of(tmp_path / 'wide')['c1']
    assert per_frame.shape == wide.shape == (n, 20, 20, 3)
    # per-frame boxes follow the face: every crop shows the same content, equal to the face itself
    assert np.abs(per_frame.astype(int) - vid[0, 10:30, 4:24]).mean() < 4
    # the wide box is the union (x 4..54, squared to 48 high): the face moves inside a still crop
    assert np.abs(wide[-1].astype(int) - wide[0]).mean() > 20
    assert 'nomask.mp4' in json.loads((tmp_path / 'wide_broken.json').read_text()).popitem()[0]


def test_static_videos(tmp_path):
    write_synthetic_dataset(tmp_path / 'synth.zip', num_videos=3, num_frames=6, resolution=16, progress=False)
    assert cli_main(['static', '-d', str(tmp_path / 'synth.zip'), '-l', '4']) == 0
    frozen, src = frames_of(tmp_path / 'synth_freeze.zip'), frames_of(tmp_path / 'synth.zip')
    for v, frames in frozen.items():
        assert frames.shape == (4, 16, 16, 3)
        assert (frames == frames[0]).all()
        assert any(np.array_equal(frames[0], f) for f in src[v])   # one of the video's own frames
    assert cli_main(['static', '-d', str(tmp_path / 'synth.zip'), '-o', str(tmp_path / 'f10'), '-fl', '10']) == 0
    assert {v.shape[0] for v in frames_of(tmp_path / 'f10').values()} == {10}


# ---------------------------------------------------------------- the synthetic dataset

def test_synthetic_is_deterministic(tmp_path):
    for sub in ('a', 'b'):
        assert cli_main(['synthetic', '-t', str(tmp_path / sub / 'synth.zip'), '--num_videos', '4',
                         '--num_frames', '5', '--resolution', '24', '--seed', '7']) == 0
        write_synthetic_dataset(tmp_path / sub / 'dir', num_videos=3, num_frames=4, resolution=20, seed=7,
                                ext='jpg', progress=False)
    assert tree_bytes(tmp_path / 'a' / 'synth.zip') == tree_bytes(tmp_path / 'b' / 'synth.zip')
    assert tree_bytes(tmp_path / 'a' / 'dir') == tree_bytes(tmp_path / 'b' / 'dir')
    write_synthetic_dataset(tmp_path / 'c' / 'synth.zip', num_videos=4, num_frames=5, resolution=24, seed=8,
                            progress=False)
    assert tree_bytes(tmp_path / 'c' / 'synth.zip') != tree_bytes(tmp_path / 'a' / 'synth.zip')
    # the files hold exactly the in-memory videos
    videos = frames_of(tmp_path / 'a' / 'synth.zip')
    for i in range(4):
        assert np.array_equal(videos[f'{i:06d}'], synthetic_video((7, i), 5, 24))


def test_synthetic_style_at_the_cli(tmp_path, capsys):
    style = dict(max_shapes=1, texture=0.3, scale=3.0, spin=0.0, speed=0.5)   # the demo's style, upright and slower
    argv = ['synthetic', '-o', str(tmp_path / 'demo.zip'), '--num-videos', '3', '--num-frames', '4', '--resolution', '24',
            '--max-shapes', '1', '--texture', '0.3', '--scale', '3', '--spin', '0', '--speed', '0.5']
    assert cli_main(argv) == 0
    videos = frames_of(tmp_path / 'demo.zip')
    for i in range(3):
        assert np.array_equal(videos[f'{i:06d}'], synthetic_video((0, i), 4, 24, **style))
    assert not np.array_equal(videos['000000'], synthetic_video((0, 0), 4, 24))      # restyled, not the default scenes
    from stylegan_v.cli import main
    capsys.readouterr()                                                             # the progress bar of the good run
    for flag, value, message in (('--scale', '4', 'scale must be a number in (0, 3]'), ('--spin', '-1', 'spin must be a number >= 0')):
        assert main(['prepare', 'synthetic', '-o', str(tmp_path / 'bad.zip'), flag, value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('stylegan-v prepare synthetic: error: ') and message in err[0], err
        assert not (tmp_path / 'bad.zip').exists()


def test_synthetic_video_content():
    video = synthetic_video(11, num_frames=24, resolution=48)
    assert video.shape == (24, 48, 48, 3) and video.dtype == np.uint8
    assert np.array_equal(video, synthetic_video(11, 24, 48))
    motion = np.abs(np.diff(video.astype(int), axis=0)).mean(axis=(1, 2, 3))
    assert (motion > 0).all()                                       # something moves in every frame
    assert video.std(axis=(0, 1, 2)).min() > 10                    # not a flat picture
    with pytest.raises(ValueError, match='resolution'):
        synthetic_video(0, 4, -1)


def test_synthetic_default_size_is_fast(tmp_path):
    t0 = time.perf_counter()
    write_synthetic_dataset(tmp_path / 'd.zip', progress=False)    # 32 videos x 32 frames at 64 px
    assert time.perf_counter() - t0 < 15
    assert len(DatasetLayout(tmp_path / 'd.zip').videos) == 32


def test_training_reader_reads_what_we_write(tmp_path):
    dataset = pytest.importorskip('stylegan_v.data.dataset')
    write_synthetic_dataset(tmp_path / 'synth.zip', num_videos=4, num_frames=8, resolution=16, labels=True,
                            progress=False)
    src = write_video(tmp_path / 'v.mp4', moving_clip(20), fps=24)
    assert cli_main(['video', '-s', str(src), '-t', str(tmp_path / 'chunks'), '-cs', '10', '--target_size', '16']) == 0
    ds = dataset.VideoDataset(tmp_path / 'synth.zip', use_labels=True, load_n_consecutive=8,
                              load_n_consecutive_random_offset=False)
    assert len(ds) == 4 and ds.c_dim == max(video_recipe((0, i))['label'] for i in range(4)) + 1
    clip = ds[2]
    assert np.array_equal(np.asarray(clip['image']).transpose(0, 2, 3, 1), synthetic_video((0, 2), 8, 16))
    assert int(np.argmax(np.asarray(clip['label']))) == video_recipe((0, 2))['label']
    ds.close()
    ds = dataset.VideoDataset(tmp_path / 'chunks', load_n_consecutive=10)
    assert len(ds) == 2 and tuple(np.asarray(ds[1]['image']).shape) == (10, 3, 16, 16)
    ds.close()


# ---------------------------------------------------------------- one bad argument per subcommand

def _corrupt_zip(tmp_path):
    "A frame-dataset zip whose every frame member fails its CRC check."
    zip_path = write_synthetic_dataset(tmp_path / 'in' / 'ds.zip', num_videos=2, num_frames=3, resolution=8, progress=False)
    data = bytearray(zip_path.read_bytes())
    start = 0
    while (i := data.find(b'IDAT', start)) >= 0:
        data[i + 6] ^= 0xFF
        start = i + 4
    zip_path.write_bytes(bytes(data))
    return zip_path


BAD_ARGUMENTS = {  # subcommand -> (argv with {in} / {out} placeholders, text the error must contain)
    'video': (['video', '-s', '{in}/missing.mp4', '-n', '2', '-o', '{out}'], 'missing.mp4 does not exist'),
    'videos': (['videos', '-s', '{in}', '-o', '{out}'], 'no videos with extension'),
    'crop': (['crop', '{in}/ds.zip', '-o', '{out}', '--resize', '4'], 'Bad CRC-32'),
    'faces': (['faces', '-s', '{in}/nope', '-o', '{out}'], 'does not exist'),
    'static': (['static', '-d', '{in}/ds.zip', '-o', '{out}'], 'Bad CRC-32'),
    'synthetic': (['synthetic', '-o', '{out}', '--resolution', '0'], "argument --resolution: invalid positive_int value: '0'"),
}


@pytest.mark.parametrize('mode', sorted(BAD_ARGUMENTS))
def test_bad_argument_is_one_line_exit_2_nothing_written(tmp_path, mode, capsys, monkeypatch):
    from stylegan_v.cli import main
    monkeypatch.delenv('STYLEGAN_V_DEBUG', raising=False)
    _corrupt_zip(tmp_path)
    argv, message = BAD_ARGUMENTS[mode]
    argv = [a.replace('{in}', str(tmp_path / 'in')).replace('{out}', str(tmp_path / 'out' / 'ds.zip')) for a in argv]
    assert main(['prepare', *argv]) == 2
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith('stylegan-v') or 'Traceback' in l or 'Error' in l]
    assert len(lines) == 1 and lines[0].startswith(f'stylegan-v prepare {mode}: error: ') and message in lines[0], err
    assert not (tmp_path / 'out').exists()
    assert sorted(p.name for p in (tmp_path / 'in').iterdir()) == ['ds.zip']  # nor anything beside the input
