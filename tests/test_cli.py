"""The command-line convention, tried as a new user would: every existing subcommand given a bad argument ends in one
line `stylegan-v CMD: error: ...`, exit code 2, no traceback and nothing written; --debug / STYLEGAN_V_DEBUG=1 show the
traceback; Ctrl-C prints `interrupted` and exits 130. (Subcommands added later test their own bad input the same way.)"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name('stylegan-v')
CMD = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, '-c', 'import sys; from stylegan_v.cli import main; sys.exit(main())']


def run(args, cwd, **env):
    return subprocess.run(CMD + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, 'STYLEGAN_V_DEBUG': '', **env})


def files_under(path: Path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.rglob('*'))


def bad_inputs(tmp: Path):
    "(argv, expected prefix, expected fragment) for each existing subcommand; files the commands may read are made here."
    (tmp / 'notes.pkl').write_text('not a pickle')
    (tmp / 'taken.safetensors').write_bytes(b'x')
    (tmp / 'a_file').write_text('x')
    return [
        (['frobnicate'], 'stylegan-v: error:', "unknown command 'frobnicate'"),
        (['info', '--bogus'], 'stylegan-v info: error:', 'unrecognized arguments: --bogus'),
        (['convert', tmp / 'notes.pkl', tmp / 'out.safetensors'], 'stylegan-v convert: error:', 'is not a checkpoint: it looks like text'),
        (['convert', tmp / 'missing.pkl', tmp / 'out.safetensors'], 'stylegan-v convert: error:', 'missing.pkl does not exist'),
        (['convert', tmp / 'notes.pkl', tmp / 'taken.safetensors'], 'stylegan-v convert: error:', 'pass --force'),
        (['convert', tmp / 'notes.pkl'], 'stylegan-v convert: error:', 'the following arguments are required: dst'),
        (['demo', '-o', tmp / 'run', 'foo=1'], 'stylegan-v demo: error:', "unknown field 'foo'"),
        (['demo', '-o', tmp / 'run', 'resolution=abc'], 'stylegan-v demo: error:', 'resolution: expected an integer'),
        (['demo', '-o', tmp / 'run', 'resolution=48'], 'stylegan-v demo: error:', 'expected a power of two'),
        (['demo', '-o', tmp / 'run', 'seed'], 'stylegan-v demo: error:', 'expected key=value'),
        (['demo', '-o', tmp / 'run', '--checkpoint', 'nope.pkl'], 'stylegan-v demo: error:', 'nope.pkl does not exist'),
        (['demo', '-o', tmp / 'run', '--checkpoint', tmp / 'notes.pkl'], 'stylegan-v demo: error:', 'is not a checkpoint'),
        (['demo', '-o', tmp / 'a_file'], 'stylegan-v demo: error:', 'is not a folder'),
    ]


def test_bad_arguments_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch):
    """In process (the console script is `sys.exit(main())`, so main's return value is the exit code)."""
    from stylegan_v.cli import main
    monkeypatch.chdir(tmp_path); monkeypatch.delenv('STYLEGAN_V_DEBUG', raising=False)
    cases = bad_inputs(tmp_path)
    before = files_under(tmp_path)
    for argv, prefix, fragment in cases:
        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert rc == 2, (argv, rc, err)
        assert err.count('\n') == 1 and err.startswith(prefix) and fragment in err, (argv, err)
        assert out == '', (argv, out)
        assert files_under(tmp_path) == before, (argv, 'wrote', set(files_under(tmp_path)) - set(before))


def test_console_script_exit_code_and_debug(tmp_path):
    """The real process: exit status 2 and one line; --debug and STYLEGAN_V_DEBUG=1 add the traceback."""
    r = run(['demo', '-o', tmp_path / 'run', 'resolution=abc'], cwd=tmp_path)
    assert (r.returncode, r.stderr.count('\n'), r.stdout) == (2, 1, ''), r.stderr
    assert r.stderr.startswith('stylegan-v demo: error: ') and 'Traceback' not in r.stderr
    r = run(['convert', tmp_path / 'missing.pkl', tmp_path / 'out.safetensors', '--debug'], cwd=tmp_path)
    assert r.returncode == 2 and 'Traceback' in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith('stylegan-v convert: error:')
    assert not (tmp_path / 'run').exists() and not (tmp_path / 'out.safetensors').exists()


def test_debug_environment_variable(tmp_path, capsys, monkeypatch):
    from stylegan_v.cli import main
    monkeypatch.setenv('STYLEGAN_V_DEBUG', '1')
    assert main(['convert', str(tmp_path / 'missing.pkl'), str(tmp_path / 'out.safetensors')]) == 2
    err = capsys.readouterr().err
    assert 'Traceback' in err and err.rstrip().splitlines()[-1].startswith('stylegan-v convert: error:')


def test_help_shows_defaults(capsys):
    from stylegan_v.cli import main
    for cmd in ('info', 'convert', 'demo'):
        assert main([cmd, '--help']) == 0
        out = capsys.readouterr().out
        assert f'usage: stylegan-v {cmd}' in out and '--debug' in out
        if cmd == 'demo': assert 'default: runs_out/demo' in out


def test_ctrl_c_prints_interrupted_exit_130(tmp_path):
    "Ctrl-C while the demo trains: the step in progress ends, a snapshot of it is written, `interrupted`, exit 130."
    from stylegan_v.checkpoints import read_checkpoint
    from stylegan_v.runs import latest_snapshot, load_stats
    proc = subprocess.Popen(CMD + ['demo', '-o', str(tmp_path / 'run'), 'resolution=16', 'num_videos=4', 'kimg=5'],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, 'STYLEGAN_V_DEBUG': ''})
    train_dir, deadline = tmp_path / 'run' / 'train', time.time() + 600   # a loaded machine may take minutes to get there
    while not (train_dir / 'stats.jsonl').exists() and proc.poll() is None and time.time() < deadline: time.sleep(0.05)
    assert (train_dir / 'stats.jsonl').exists() and proc.poll() is None, 'the demo did not start training within 10 min'
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=240)             # one step and one snapshot, however slow the machine
    if proc.returncode == 0: pytest.skip('the demo finished before the interrupt arrived')
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == 'interrupted', (proc.returncode, err)
    assert not list((tmp_path / 'run').rglob('.*.partial')), 'atomic writes leave no temporaries behind'
    newest = latest_snapshot(train_dir)
    assert read_checkpoint(newest)[0]['metadata']['counters']['batch_idx'] >= max(s['step'] for s in load_stats(train_dir))
