"""The README's tour, as written: its commands are read from README.md (so the README cannot drift from the code).

Fast: every command names a real subcommand, and every option it uses is one that subcommand's --help lists.
Slow (STYLEGAN_V_SLOW=1): the commands run in the README's order in a scratch folder on the CPU, offline, at toy sizes
(toy arguments are appended: for options and key=value fields the last value wins), then the Python snippet as a
script (it must exit 0). Commands that need what this machine may not have (detector files, CLIP weights, an
original pickle, several processes) are skipped with the reason, unless the files are given (STYLEGAN_V_DETECTOR_*).
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / 'README.md'
SLOW = os.environ.get('STYLEGAN_V_SLOW') == '1'


def fenced(language: str, after: str) -> list[str]:
    "The fenced blocks of `language` in README.md after the heading `after`."
    text = README.read_text().split(after, 1)[1]
    return re.findall(rf'```{language}\n(.*?)```', text, flags=re.S)


def tour_commands() -> list[list[str]]:
    "The tour's bash lines as argument lists (comments dropped)."
    lines = [l.split('  #')[0].strip() for l in fenced('bash', '## A 30-second tour')[0].splitlines()]
    return [shlex.split(l) for l in lines if l and not l.startswith('#')]


def stylegan_v(*args, cwd, timeout=1800, env=None):
    return subprocess.run([sys.executable, '-m', 'stylegan_v.cli', *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_the_tour_is_in_the_readme():
    cmds = tour_commands()
    assert cmds[0] == ['source', '.venv/bin/activate'] and len(cmds) >= 15
    assert fenced('python', '## A 30-second tour'), 'the Python snippet'


def test_every_tour_command_and_option_exists(capsys):
    from stylegan_v.cli import main
    helps = {}
    for cmd in tour_commands():
        if cmd[0] == 'source': continue
        args = cmd[cmd.index('train'):] if cmd[0] == 'torchrun' else cmd[1:]
        assert cmd[0] in ('stylegan-v', 'torchrun'), cmd
        words = [args[0]] + ([args[1]] if args[0] == 'prepare' else [])
        key = ' '.join(words)
        if key not in helps:
            assert main(words + ['--help']) == 0, key
            helps[key] = capsys.readouterr().out
        for opt in (a for a in args if a.startswith('-')):
            assert re.search(rf'(^|[\s,\[]){re.escape(opt)}\b', helps[key]), f"{key}: the README uses {opt}, which --help does not list"


# toy sizes for each tour command, appended to what the README says
TOY_MODEL = ['model.fmaps=0.0078125', 'model.channel_max=16', 'model.z_dim=16', 'model.w_dim=16', 'model.motion_z_dim=16',
             'model.time_enc_dim=8', 'model.concat_res=8', 'model.fp32=true', 'data.resolution=16', 'data.max_num_frames=16',
             'train.batch_size=4', 'train.num_workers=0', 'train.kimg_per_tick=0.012', 'train.grid_videos=2',
             'train.grid_frames=2', 'train.progress=false']
TOY = {'demo': ['resolution=16', 'kimg=0.05', 'num_videos=4', 'num_frames=16', 'sample_frames=8', 'strip_frames=4',
                'evidence_clips=16', 'channels=16'],
       'prepare synthetic': ['--num-videos', '8', '--num-frames', '16', '--resolution', '16'],
       'prepare video': ['-cs', '8'],
       'train --data': TOY_MODEL + ['train.kimg=0.012'],
       'train resume=latest': ['train.kimg=0.024'],
       'generate': ['--video-len', '4', '--no-progress']}
NEEDS = {'metrics': ('i3d', 'inception'), 'project': ('lpips',), 'edit': ('clip',)}


def toy_args(cmd: list[str]) -> list[str]:
    sub = cmd[1]
    if sub == 'prepare': return TOY['prepare ' + cmd[2]]
    if sub == 'train': return [] if '--show-config' in cmd else TOY['train --data' if '--data' in cmd else 'train resume=latest']
    return TOY.get(sub, [])


def write_mp4(path, height, width, frames=24):
    import av, numpy as np
    base = np.random.default_rng(0).integers(0, 255, (height, width + frames, 3), dtype=np.uint8)
    with av.open(str(path), 'w') as f:
        s = f.add_stream('libx264', rate=10); s.height, s.width, s.pix_fmt = height, width, 'yuv420p'
        for k in range(frames): f.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, k:k + width]), format='rgb24')))
        f.mux(s.encode())


@pytest.mark.skipif(not SLOW, reason='slow (the whole tour, demo included, at toy sizes): set STYLEGAN_V_SLOW=1')
@pytest.mark.timeout(3600)
def test_the_tour_runs_in_order_on_a_cpu_offline(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1', MPLBACKEND='Agg', STYLEGAN_V_CACHE=str(tmp_path / 'cache'),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    write_mp4(tmp_path / 'my.mp4', 36, 48)                         # the reader's own files
    (tmp_path / 'my_videos').mkdir()
    for name, (h, w) in {'wide': (24, 40), 'tall': (40, 24), 'square': (32, 32)}.items():
        write_mp4(tmp_path / 'my_videos' / f'{name}.mp4', h, w)
    write_mp4(tmp_path / 'clip.mp4', 16, 16)
    pkl = REPO.parent / 'shared' / 'parity' / 'config_a' / 'fixture.pkl'
    if pkl.is_file(): shutil.copy(pkl, tmp_path / 'network-snapshot.pkl')
    skipped = []
    for cmd in tour_commands():
        if cmd[0] == 'source': continue                            # the test runs the venv's python directly
        if cmd[0] == 'torchrun': skipped.append('torchrun: several processes'); continue
        missing = [d for d in NEEDS.get(cmd[1], ()) if not os.environ.get(f'STYLEGAN_V_DETECTOR_{d.upper()}')]
        if missing: skipped.append(f"{cmd[1]}: offline without {', '.join(missing)} (STYLEGAN_V_DETECTOR_<NAME>)"); continue
        if cmd[1] == 'convert' and not pkl.is_file(): skipped.append('convert: no original pickle here'); continue
        r = stylegan_v(*cmd[1:], *toy_args(cmd), cwd=tmp_path, env=env)
        assert r.returncode == 0, (cmd, r.stdout[-2000:], r.stderr[-2000:])
        if cmd[1] == 'demo':                                       # the main job again: reused, not retrained
            again = subprocess.run(['bash', str(REPO / 'tools' / 'main.sh'), str(tmp_path / 'runs_out' / 'demo')],
                                   capture_output=True, text=True, timeout=900, env=env)
            assert again.returncode == 0 and 'reusing it, not training again' in again.stdout, again.stdout[-2000:]
    import av
    with av.open(str(tmp_path / 'out' / 'decomposition' / 'decomposition.mp4')) as f:
        frame = next(f.decode(video=0)).to_ndarray(format='rgb24')
    assert frame.shape[0] >= 4 * 16, frame.shape                   # 4x4 cells, not 1x1
    (tmp_path / 'snippet.py').write_text(fenced('python', '## A 30-second tour')[0])
    r = subprocess.run([sys.executable, 'snippet.py'], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]                     # the explorer's thread ends cleanly too
    print('skipped:', '; '.join(skipped))


def test_decomposition_without_seeds_is_a_real_grid(tmp_path):
    """The tour's `generate --decomposition` (no seeds given): a 4x4 grid, not the 1x1 that --num-videos's 1 gave."""
    import json
    from stylegan_v.checkpoints import save_checkpoint
    from stylegan_v.generate import cli_main
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_models import tiny_generator
    ckpt = save_checkpoint(tmp_path / 'g.safetensors', {'G_ema': tiny_generator(16)})
    assert cli_main(['--network', str(ckpt), '--outdir', str(tmp_path / 'out'), '--decomposition', '--video-len', '2',
                     '--no-progress']) == 0
    rec = json.loads((tmp_path / 'out' / 'decomposition.json').read_text())
    assert rec['seeds'] == [0, 1, 2, 3], rec['seeds']
    import av
    with av.open(str(tmp_path / 'out' / rec['outputs'][0])) as f:
        assert next(f.decode(video=0)).to_ndarray(format='rgb24').shape[:2] == (4 * 16, 4 * 16)


def headless_commands() -> list[list[str]]:
    "The bash lines of the README's 'Headless runs and sweeps' section, as argument lists."
    lines = [l.split('  #')[0].strip() for l in fenced('bash', '## Headless runs and sweeps')[0].splitlines()]
    return [shlex.split(l) for l in lines if l and not l.startswith('#')]


def test_every_headless_command_names_real_templates_parameters_and_options(capsys):
    "papermill lines: the template exists and declares every -p name (else the run would stop at its check);"
    " stylegan-v lines: the subcommand and every option exist."
    from nbformat import read
    from stylegan_v.cli import main
    from stylegan_v.notebooks import assigned_names
    cmds = headless_commands()
    assert {c[0] for c in cmds} == {'papermill', 'stylegan-v'} and len(cmds) >= 5, cmds
    for cmd in cmds:
        if cmd[0] == 'papermill':
            template = REPO / cmd[1]
            cells = [c for c in read(str(template), as_version=4).cells if 'parameters' in c.metadata.get('tags', [])]
            assert len(cells) == 1, f'{cmd[1]}: one cell tagged parameters'
            declared = set(assigned_names(cells[0].source))
            given = [cmd[i + 1] for i, a in enumerate(cmd) if a == '-p']
            assert given and set(given) <= declared, f'{cmd[1]}: -p {sorted(set(given) - declared)} not among {sorted(declared)}'
        else:
            assert main([cmd[1], '--help']) == 0, cmd
            help_text = capsys.readouterr().out
            for opt in (a for a in cmd[2:] if a.startswith('-')):
                assert re.search(rf'(^|[\s,\[]){re.escape(opt)}\b', help_text), f"{cmd[1]}: the README uses {opt}, which --help does not list"
