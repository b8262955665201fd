"""The on-disk layouts (stylegan_v.data.layout): one scanner and one atomic writer for frame folders (dir/zip) and video files."""
import json
import zipfile

import numpy as np
import pytest

from stylegan_v.data.dataset import VideoDataset
from stylegan_v.data.layout import (DatasetError, DatasetLayout, DatasetStorage, DatasetWriter, decode_frame,
                                    scan_layout, video_labels)
from stylegan_v.data.synthetic import synthetic_video, write_synthetic_dataset
from stylegan_v.data.video import VideoReadError


def frames(n, size=8, seed=0):
    return list(np.random.default_rng(seed).integers(0, 255, (n, size, size, 3), dtype=np.uint8))


@pytest.mark.parametrize('target', ['ds', 'ds.zip'])
def test_frame_dataset_roundtrip_with_labels(tmp_path, target):
    v = {'a': frames(3), 'b': frames(2, seed=1)}
    with DatasetWriter(tmp_path / target, ext='png') as w:
        for name, fs in v.items(): w.add_video(name, fs)
        w.set_labels({'a': [0.5, 1.0], 'b': [1.0, 0.0]})
    with DatasetLayout(tmp_path / target) as lay:
        assert lay.kind == 'frames' and list(lay.videos) == ['a', 'b']
        for name, fs in v.items():
            assert all(np.array_equal(decode_frame(lay.read_bytes(f)), x) for f, x in zip(lay.videos[name], fs))
        assert lay.video_labels() == {'a': [0.5, 1.0], 'b': [1.0, 0.0]}
    if target.endswith('.zip'):  # the original's strict zip layout: root entry first, directory entries
        with zipfile.ZipFile(tmp_path / target) as z:
            assert z.namelist()[:3] == ['ds/', 'ds/a/', 'ds/a/000000.png']


@pytest.mark.parametrize('target', ['clips', 'clips.zip'])
def test_mp4_dataset_written_by_the_layout_writer_reads_as_a_dataset(tmp_path, target):
    out = write_synthetic_dataset(tmp_path / target, num_videos=3, num_frames=10, resolution=32, ext='mp4', labels=True,
                                  progress=False)
    ds = VideoDataset(out, load_n_consecutive=10, use_labels=True)
    assert ds.video_names == ['000000.mp4', '000001.mp4', '000002.mp4'] and ds.c_dim == 3
    for i in range(3):
        got = ds[i]['image'].permute(0, 2, 3, 1).numpy().astype(int)
        assert np.abs(got - synthetic_video((0, i), 10, 32)).mean() < 2   # crf 2, 4:4:4: near-lossless
    assert sorted(p.name for p in tmp_path.iterdir()) == [target]


def test_one_scanner_for_every_reader(tmp_path):
    lay = scan_layout(['r/v1/0.png', 'r/v1/1.png', 'r/v0/0.png', 'r/dataset.json'])
    assert (lay['root'], lay['kind'], list(lay['videos'])) == ('r/', 'frames', ['v0', 'v1'])
    assert scan_layout(['a.MKV', 'b.mp4'])['videos'] == {'a.MKV': 'a.MKV', 'b.mp4': 'b.mp4'}
    with pytest.raises(DatasetError, match='mixes frame folders'):
        scan_layout(['v/0.png', 'w.mp4'])
    assert video_labels('{"labels": [["r/v0/0.png", 1], ["v1", 2]]}', ['v0', 'v1'], root='r/') == {'v0': 1, 'v1': 2}


def test_damaged_zip_member_is_a_one_line_dataset_error(tmp_path):
    out = write_synthetic_dataset(tmp_path / 'd.zip', num_videos=1, num_frames=2, resolution=8, progress=False)
    data = bytearray(out.read_bytes())
    data[data.index(b'IDAT') + 6] ^= 0xFF
    out.write_bytes(bytes(data))
    st = DatasetStorage(out)
    with pytest.raises(DatasetError, match=r"cannot read d/000000/000000.png \(in .*d.zip\): BadZipFile"):
        st.read_bytes('d/000000/000000.png')
    assert issubclass(DatasetError, ValueError) and issubclass(VideoReadError, ValueError)


def test_writer_refuses_and_cleans_up(tmp_path):
    with DatasetWriter(tmp_path / 'x', ext='png') as w: w.add_video('a', frames(1))
    with pytest.raises(FileExistsError, match='--force'):
        DatasetWriter(tmp_path / 'x')
    with pytest.raises(DatasetError, match='empty dataset'):
        with DatasetWriter(tmp_path / 'new' / 'y.zip'): pass
    with pytest.raises(DatasetError, match='takes whole videos'):
        with DatasetWriter(tmp_path / 'new' / 'z', ext='mp4') as w: w.add_encoded('a', '0.png', b'')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['x']   # no temporaries, and the new folder is gone
    with pytest.raises(DatasetError, match='labels .* miss 1 video'):
        with DatasetWriter(tmp_path / 'l', ext='png') as w:
            w.add_video('a', frames(1)); w.add_video('b', frames(1)); w.set_labels({'a': 0})
    assert not (tmp_path / 'l').exists()
