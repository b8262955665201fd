"""Benchmark (not a test): memory against video length, and the cost of writing, for `stylegan_v.generate`.

Generator at the original's default widths (`ModelConfig().generator_kwargs(resolution)`: channel_base 16384,
channel_max 512, z = w = 512, 2 mapping layers, StyleGAN-V motion/time-encoder defaults), random weights (the weights do
not change the cost), eval mode, CPU.

1. Memory: one fresh subprocess per (resolution, length) point renders one video of that length with
   `generate_videos` -> `write_videos` (what `generate` runs: chunks of `--chunk-frames` frames streamed to an mp4 by
   the background encoder) and reports its peak RSS (`ru_maxrss`, from `os.wait4`, so it also covers a point stopped
   at `--time-limit`), the RSS once the model is built, and the peak after the first two chunks and after half of the
   frames it reached (flat when memory does not grow with length). Ratios are against the shortest length at the same
   widths and resolution. A point that hits the time limit says how many frames it reached.
   `--widths small` (synthesis channels <= 64, all else the original's) runs long videos quickly on a small CPU: it
   exercises every part whose memory could grow with length (motion noise, trajectory windows, chunking, encoder).
2. Throughput: frames/s of `generate` (render + uint8 + mp4 encoding in its thread) against the bare generator forward
   at the same batch (the same `render_chunk` calls, nothing written), alternated `--reps` times in one process.

    python bench/generate.py                                 # everything (long on 2 cores: see --time-limit)
    python bench/generate.py --resolutions 64 --lengths 64,256 --reps 1
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_generator(resolution: int, widths: str = 'default'):
    "`widths='default'`: the original's; `'small'`: synthesis channels capped at 64 (everything else the same)."
    import torch
    from stylegan_v.config import ModelConfig
    from stylegan_v.networks.generator import Generator
    torch.manual_seed(0)
    kwargs = ModelConfig().generator_kwargs(resolution)
    if widths == 'small': kwargs['synthesis_kwargs'].update(channel_base=1024, channel_max=64)
    return Generator(**kwargs).eval().requires_grad_(False)


def child_memory(resolution: int, length: int, chunk_frames: int, widths: str):
    "Render one video of `length` frames to an mp4 (in a temp dir) as `generate` does; print JSON lines of progress and RSS."
    import resource
    from stylegan_v.generate import generate_videos, open_sink, write_videos
    maxrss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    G = build_generator(resolution, widths)
    print(json.dumps({'event': 'built', 'rss_mb': maxrss()}), flush=True)
    t0 = time.time()

    def traced(chunks):  # peak RSS so far after each chunk: flat after the first chunks if memory is bounded
        for ch in chunks:
            yield ch
            print(json.dumps({'event': 'chunk', 'frames': ch.start + ch.frames.shape[1], 'rss_mb': maxrss(),
                              'seconds': time.time() - t0}), flush=True)
    with tempfile.TemporaryDirectory() as d:
        write_videos(traced(generate_videos(G, [0], length, batch_size=1, chunk_frames=chunk_frames)),
                     lambda i: open_sink(Path(d) / 'video.mp4'), 1, length)
        size = (Path(d) / 'video.mp4').stat().st_size
    print(json.dumps({'event': 'done', 'seconds': time.time() - t0, 'mp4_bytes': size, 'rss_mb': maxrss()}), flush=True)


def run_point_with_rusage(resolution, length, chunk_frames, time_limit, widths):
    "Peak RSS of a fresh child rendering one video, from `os.wait4` (so it works for a child killed at the time limit)."
    cmd = [sys.executable, __file__, '--child', f'{resolution},{length},{chunk_frames},{widths}']
    t0 = time.time()
    out_f = tempfile.TemporaryFile('w+')
    proc = subprocess.Popen(cmd, stdout=out_f, stderr=subprocess.STDOUT, text=True)
    stopped = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid: break
        if time.time() - t0 > time_limit:
            proc.kill(); stopped = True
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out_f.seek(0); text = out_f.read()
    lines = [json.loads(l) for l in text.splitlines() if l.startswith('{')]
    events = {e['event']: e for e in lines}
    trace = [e for e in lines if e['event'] == 'chunk']
    rec = {'widths': widths, 'resolution': resolution, 'length': length, 'seconds': round(time.time() - t0, 1), 'stopped': stopped,
           'peak_rss_mb': round(usage.ru_maxrss / 1024, 1),
           'model_rss_mb': round(events['built']['rss_mb'], 1) if 'built' in events else None}
    rec['frames_done'] = trace[-1]['frames'] if trace else 0
    if trace: rec['fps'] = round(trace[-1]['frames'] / trace[-1]['seconds'], 2)
    # peak RSS after the first two chunks, and after half of the frames reached: equal when memory does not grow
    rec['rss_after_2_chunks_mb'] = round(trace[min(1, len(trace) - 1)]['rss_mb'], 1) if trace else None
    rec['rss_at_half_mb'] = round(trace[len(trace) // 2]['rss_mb'], 1) if trace else None
    if not stopped and proc.returncode != 0: rec['error'] = text.strip().splitlines()[-1]
    return rec


def throughput(resolution: int, frames: int, batch_size: int, chunk_frames: int, reps: int) -> dict:
    import torch
    from stylegan_v.generate import class_labels, content_codes, frame_times, generate, render_chunk
    G = build_generator(resolution)
    seeds = list(range(batch_size))
    times = frame_times(frames)
    c = class_labels(G, None, batch_size)

    def bare():  # the generator forward of the same chunks, nothing converted or written
        ws, motions = content_codes(G, seeds, c), [G.sample_motion(1, seed=s) for s in seeds]
        for s in range(0, frames, chunk_frames):
            render_chunk(G, ws, motions, c, times[s:s + chunk_frames].expand(batch_size, -1))

    def full():
        with tempfile.TemporaryDirectory() as d:
            generate(G, d, seeds, frames, batch_size=batch_size, chunk_frames=chunk_frames, progress=False)

    bare()  # warm-up (kernels, allocator)
    secs = {'bare forward': [], 'generate (mp4)': []}
    cpu = {k: [] for k in secs}  # CPU seconds of the whole process (all threads, the encoder's included)
    for rep in range(reps):
        order = (('bare forward', bare), ('generate (mp4)', full))
        for name, fn in (order if rep % 2 == 0 else order[::-1]):  # alternate which goes first (machine load drifts)
            t0, c0 = time.perf_counter(), time.process_time(); fn()
            secs[name].append(time.perf_counter() - t0); cpu[name].append(time.process_time() - c0)
    fps = {k: batch_size * frames / min(v) for k, v in secs.items()}
    return {'resolution': resolution, 'videos': batch_size, 'frames': frames, 'chunk_frames': chunk_frames,
            'threads': torch.get_num_threads(), 'fps': {k: round(v, 3) for k, v in fps.items()},
            'seconds': {k: [round(x, 2) for x in v] for k, v in secs.items()},
            'ratio generate/bare': round(fps['generate (mp4)'] / fps['bare forward'], 3),
            'cpu_seconds': {k: [round(x, 2) for x in v] for k, v in cpu.items()},
            'cpu ratio generate/bare': round(min(cpu['generate (mp4)']) / min(cpu['bare forward']), 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--child', help=argparse.SUPPRESS)
    p.add_argument('--resolutions', default='64,256')
    p.add_argument('--lengths', default='64,256,1024,4096')
    p.add_argument('--chunk-frames', type=int, default=16)
    p.add_argument('--widths', default='default', help="'default' (the original's), 'small' (channels <= 64), or 'default,small'")
    p.add_argument('--time-limit', type=float, default=1800, help='seconds per memory point before it is stopped')
    p.add_argument('--skip-memory', action='store_true')
    p.add_argument('--skip-throughput', action='store_true')
    p.add_argument('--tp-resolutions', default='64,256', help='resolutions of the throughput comparison')
    p.add_argument('--tp-frames', type=int, default=32)
    p.add_argument('--tp-batch', type=int, default=2)
    p.add_argument('--reps', type=int, default=2)
    p.add_argument('--json', help='also write the results here')
    args = p.parse_args()
    if args.child:
        res, length, chunk, widths = args.child.split(',')
        return child_memory(int(res), int(length), int(chunk), widths)
    results = {'memory': [], 'throughput': []}
    if not args.skip_memory:
        print(f"peak memory vs length (one fresh process per point, chunk {args.chunk_frames} frames, mp4 streamed)")
        print(f"{'widths':>8} {'res':>5} {'frames':>7} {'peak RSS MB':>12} {'model RSS MB':>13} {'after 2 chunks':>15} "
              f"{'x shortest':>11} {'frames/s':>9}  note")
        for widths, res in [(w, int(r)) for w in args.widths.split(',') for r in args.resolutions.split(',')]:
            base = None
            for length in map(int, args.lengths.split(',')):
                rec = run_point_with_rusage(res, length, args.chunk_frames, args.time_limit, widths)
                base = base or rec['peak_rss_mb']
                rec['ratio_to_shortest'] = round(rec['peak_rss_mb'] / base, 3)
                results['memory'].append(rec)
                note = (f"stopped at the time limit after {rec['frames_done']} frames (peak RSS at half of them: "
                        f"{rec['rss_at_half_mb']} MB)" if rec['stopped'] else rec.get('error', ''))
                print(f"{widths:>8} {res:>5} {length:>7} {rec['peak_rss_mb']:>12.1f} {rec['model_rss_mb'] or float('nan'):>13.1f} "
                      f"{rec['rss_after_2_chunks_mb'] or float('nan'):>15.1f} {rec['ratio_to_shortest']:>11.3f} "
                      f"{rec.get('fps', float('nan')):>9.2f}  {note}", flush=True)
    if not args.skip_throughput:
        print(f"\nthroughput: generate (mp4 written by the background encoder) vs the bare forward, "
              f"{args.tp_batch} videos x {args.tp_frames} frames, chunks of {args.chunk_frames}, best of {args.reps}")
        for res in map(int, args.tp_resolutions.split(',')):
            rec = throughput(res, args.tp_frames, args.tp_batch, args.chunk_frames, args.reps)
            results['throughput'].append(rec)
            print(f"{res:>5}px  bare {rec['fps']['bare forward']:.2f} frames/s  generate {rec['fps']['generate (mp4)']:.2f} "
                  f"frames/s  ratio {rec['ratio generate/bare']:.3f}  (seconds {rec['seconds']}); CPU seconds "
                  f"generate/bare {rec['cpu ratio generate/bare']:.3f} ({rec['cpu_seconds']})", flush=True)
    if args.json: Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == '__main__':
    main()
