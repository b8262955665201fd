"""bench/gpu_check.py, the one-command GPU check: its CPU plumbing at toy sizes (`--device cpu --quick`), its reporting of
parts that fail or run out of time, and, where a GPU is present, its CUDA parts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'bench' / 'gpu_check.py'
SLOW = os.environ.get('STYLEGAN_V_SLOW') == '1'


def run_check(out: Path, *args, timeout=900):
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=os.environ.get('TORCH_EXTENSIONS_DIR', str(REPO / '.torch_extensions')),
               HF_HUB_OFFLINE='1', PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, str(SCRIPT), '--out', str(out), *args], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=REPO)
    report = json.loads((out / 'report.json').read_text()) if (out / 'report.json').is_file() else None
    return r, report


def parts_of(report):
    return {p['name']: p for p in report['parts']}


def assert_report_readable(out: Path, report):
    md = (out / 'report.md').read_text()
    assert md.startswith('# GPU check') and '| part | status | s | checks passed | note |' in md
    assert f"torch {torch.__version__}" in md
    for p in report['parts']: assert f"| {p['name']} | {p['status']} |" in md and f"## {p['name']}: {p['status']}" in md


QUICK_PARTS = 'kernels,networks,train_fp32,train_compile,fvd,generate'


def test_quick_cpu_run(tmp_path):
    """The plumbing at toy sizes on the CPU: every part runs in its own process and passes, the CUDA-only pieces are
    skipped with one line each saying why, and both reports are written."""
    r, report = run_check(tmp_path, '--device', 'cpu', '--quick', '--parts', QUICK_PARTS)
    assert r.returncode == 0, r.stdout + r.stderr
    parts = parts_of(report)
    assert sorted(parts) == sorted(QUICK_PARTS.split(','))
    assert all(p['status'] == 'ok' for p in parts.values()), {n: (p['status'], p.get('error'), p.get('traceback')) for n, p in parts.items()}
    for p in parts.values():
        for s in p['skipped']: assert s['why'] and '\n' not in s['why']
    k = parts['kernels']
    assert k['numbers']['cpu_build'] in ('compiled', 'loaded from the cache') and len(k['checks']) == 2 + 6 + 4 + 4 + 6 + 6  # build, self-check, 5 ops x (fwd, grads, 2nd order)
    assert [s['what'] for s in k['skipped']] == ['CUDA kernel columns']
    t = parts['train_fp32']['numbers']
    assert t['s_per_iter'] > 0 and t['sec_per_kimg'] > 0 and t['dtype'] == 'fp32' and t['losses']
    assert [s['what'] for s in parts['train_compile']['skipped']] == ['fp16 arithmetic', 'torch.compile']
    f = parts['fvd']['numbers']
    assert f['videos_per_s'] > 0 and f['value_device'] == pytest.approx(f['value_cpu'], rel=1e-4)
    assert set(parts['generate']['numbers']['rows']) == {'16', '64'}
    assert report['environment']['torch'] == torch.__version__
    assert_report_readable(tmp_path, report)


def test_failed_and_hung_parts_are_reported_and_the_rest_runs(tmp_path):
    r, report = run_check(tmp_path, '--device', 'cpu', '--quick', '--parts', 'networks,generate,train_compile',
                          '--inject', 'networks=raise', '--inject', 'generate=hang', '--box-scale', '0.25')
    assert r.returncode == 1
    parts = parts_of(report)
    assert parts['networks']['status'] == 'error' and parts['networks']['error'] == 'RuntimeError: injected failure of networks'
    assert parts['generate']['status'] == 'timeout' and 'time box of 15 s' in parts['generate']['error']
    assert parts['train_compile']['status'] == 'ok'   # after a failure and a timeout the next part still ran
    assert 'gpu_check: 1/3 parts ok or skipped' in r.stdout
    assert_report_readable(tmp_path, report)


@pytest.mark.parametrize('args,expected', [
    (['--parts', 'kernels,nope'], 'gpu_check: error: --parts: unknown part(s) nope; expected some of kernels, networks'),
    (['--size', 'colour=2'], "gpu_check: error: --size colour=2: unknown key 'colour'; expected one of res, widths"),
])
def test_usage_errors_are_one_line(tmp_path, args, expected):
    r, _ = run_check(tmp_path, '--device', 'cpu', '--quick', *args, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(expected), r.stderr


def test_cuda_device_without_a_gpu_is_refused(tmp_path):
    if torch.cuda.is_available(): pytest.skip('this machine has a CUDA device')
    r, _ = run_check(tmp_path, '--device', 'cuda', '--parts', 'kernels', timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == ('gpu_check: error: --device cuda but torch sees no CUDA device; '
                                                     'use --device cpu --quick for the plumbing')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine: the CUDA parts of the check need one')
def test_quick_cuda_run(tmp_path):
    """On a GPU machine (this test's only home): the CUDA parts at toy sizes pass; under CI=true a failure fails here."""
    r, report = run_check(tmp_path, '--device', 'cuda', '--quick', '--parts', 'kernels,networks,train_fp16,fvd,generate')
    parts = parts_of(report)
    assert r.returncode == 0 and all(p['status'] == 'ok' for p in parts.values()), r.stdout + r.stderr
    assert not parts['kernels']['skipped'] and parts['train_fp16']['numbers']['peak_gpu_mem_gb'] > 0


@pytest.mark.skipif(not SLOW, reason='slow (every part, torchrun included; ~2-4 min on 2 cores): set STYLEGAN_V_SLOW=1')
def test_full_quick_cpu_run(tmp_path):
    r, report = run_check(tmp_path, '--device', 'cpu', '--quick', '--box-scale', '2')
    parts = parts_of(report)
    assert r.returncode == 0, {n: (p['status'], p.get('error')) for n, p in parts.items()}
    tr = parts['torchrun']['numbers']
    assert tr['backend'] == 'gloo' and len(tr['runs']) == 2 and 'resume=latest' in tr['runs'][1]['cmd']
    assert 'resume' not in tr['runs'][0]['cmd']
    assert_report_readable(tmp_path, report)
