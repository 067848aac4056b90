"""DemucsSplit's step-by-step BiLSTM (``BLSTM._lstm_by_steps``) against ``nn.LSTM`` on the same parameters, same run.

The bottleneck of the reference DemucsSplit: 2 layers, bidirectional, hidden = input = 1536, ``--frames`` frames
(216 = a 10 s segment, the training and separation length). Cases, at the batch sizes the project uses (1; 3, the
training batch of ``configs/demucs_split.json`` and ``WAVEFORM_BATCH`` of batched CPU separation):

- ``inference``: ``torch.inference_mode``, forward only;
- ``fwd+bwd``: forward, ``backward`` of a random projection of the output (gradients of input and weights).

The two implementations alternate repeat by repeat; the table gives the best of ``--repeat`` runs and the ratio
``nn.LSTM / ours`` (> 1: ours is faster), then the largest difference of outputs and gradients.

    .venv/bin/python benchmarks/bench_lstm.py [--repeat 3] [--frames 216] [--batches 1 3] [--threads N]
"""

import argparse
import time

import torch

from danna_sep.models.demucs import BLSTM


def run_ours(blstm: BLSTM, x: torch.Tensor) -> torch.Tensor:
    return blstm._lstm_by_steps(x)


def run_torch(blstm: BLSTM, x: torch.Tensor) -> torch.Tensor:
    return blstm.lstm(x)[0]


def infer(fn, blstm: BLSTM, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        start = time.perf_counter()
        y = fn(blstm, x)
        return time.perf_counter() - start, y


def train_step(fn, blstm: BLSTM, x: torch.Tensor, grad: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    for p in blstm.parameters():
        p.grad = None
    x = x.detach().requires_grad_(True)
    start = time.perf_counter()
    fn(blstm, x).backward(grad)
    elapsed = time.perf_counter() - start
    assert x.grad is not None
    return elapsed, [x.grad, *(p.grad for p in blstm.lstm.parameters() if p.grad is not None)]


def max_rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(((u - v).abs().max() / v.abs().max()).item() for u, v in zip(a, b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--frames", type=int, default=216)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    blstm = BLSTM(args.hidden, 2, 2 * args.hidden)
    impls = {"ours (steps)": run_ours, "nn.LSTM": run_torch}

    print(
        f"BiLSTM 2 layers, hidden {args.hidden}, {args.frames} frames, CPU {torch.get_num_threads()} threads, "
        f"best of {args.repeat} alternating runs"
    )
    print(f"{'case':<18}{'ours s':>9}{'nn.LSTM s':>11}{'nn.LSTM / ours':>16}{'max rel diff':>14}")
    for batch in args.batches:
        x = torch.randn(args.frames, batch, args.hidden)
        grad = torch.randn(args.frames, batch, 2 * args.hidden)
        for case in ("inference", "fwd+bwd"):
            best = {name: float("inf") for name in impls}
            results = {}
            for round_ in range(args.repeat + 1):  # round 0 warms up (allocator, oneDNN primitives)
                for name, fn in impls.items():
                    if case == "inference":
                        elapsed, out = infer(fn, blstm, x)
                        results[name] = [out]
                    else:
                        elapsed, results[name] = train_step(fn, blstm, x, grad)
                    if round_ > 0:
                        best[name] = min(best[name], elapsed)
            ours, ref = best["ours (steps)"], best["nn.LSTM"]
            err = max_rel(results["ours (steps)"], results["nn.LSTM"])
            print(f"{case + f' batch {batch}':<18}{ours:>9.2f}{ref:>11.2f}{ref / ours:>15.2f}×{err:>14.1e}")
    print("(max rel diff: max |ours − nn.LSTM| / max |nn.LSTM| over the output, or over every gradient)")


if __name__ == "__main__":
    main()
