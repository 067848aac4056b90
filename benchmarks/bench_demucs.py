"""CPU time of the full-size DemucsSplit against PyPI demucs's ``demucs.demucs.Demucs(channels=48, depth=6)``.

All models run in the same process, interleaved repeat by repeat so that CPU noise from other jobs hits all of them:
- ``inference``: 10 s of stereo at 44.1 kHz, batch 1, ``torch.inference_mode``;
- ``fwd+bwd``: batch 1 × 6 s in train mode, AMP off: forward, L1 loss against random stems, backward;
- ``Adam``: one optimizer step over all parameters (given gradients), with torch's default (``foreach``)
  implementation and with ``fused=True`` (``optimizer.args.fused: true`` in a config);
- ``train step`` rows are ``fwd+bwd`` plus the Adam step (sums of the minima).

The peer named by the issue is the same family but not the same network: v3-era Demucs (GELU, DConv branches
with local attention and small LSTMs, group norm at the two deepest levels) with one shared decoder and, by
default, no bottleneck BiLSTM, where ours has the 2-layer BiLSTM of §8 (94 M of its 192 M parameters) and four
decoders. Two more configurations of the same PyPI class are run beside it:

- ``+BiLSTM``: the default plus ``lstm_layers=2`` (a BiLSTM of the same size as ours);
- ``v2``: ``lstm_layers=2, dconv_mode=0, gelu=False, norm_starts=depth``, i.e. the v2 network of §8 with its
  single decoder: the 48-channel Demucs v2, which the Danna-Sep paper reports as "Demucs (baseline)". Its encoder
  and BiLSTM have exactly our parameter counts (18,870,384 and 94,420,992), so ours / v2 is the cost of the four
  decoders and nothing else.

Each ``ratio`` is ours / that peer (the issue's target: ≤ 1.3).

Every model runs under :func:`danna_sep.runtime.keep_freed_memory` (as the ``danna`` commands do), unless
``--default-malloc``.

    .venv/bin/python benchmarks/bench_demucs.py [--repeat 3] [--threads N] [--infer-seconds 10] [--train-seconds 6]
                                                [--default-malloc]
"""

import argparse
import time

import torch

SAMPLE_RATE = 44100


def build_models():
    from demucs.demucs import Demucs

    from danna_sep import SOURCES
    from danna_sep.models.demucs import DemucsSplit

    torch.manual_seed(0)
    peer = dict(sources=list(SOURCES), channels=48, depth=6)
    return {
        "DemucsSplit": DemucsSplit(),
        "demucs.Demucs": Demucs(**peer),
        "+BiLSTM": Demucs(**peer, lstm_layers=2),
        "v2": Demucs(**peer, lstm_layers=2, dconv_mode=0, gelu=False, norm_starts=peer["depth"]),
    }


def time_inference(model: torch.nn.Module, mix: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        start = time.perf_counter()
        model(mix)
        return time.perf_counter() - start


def time_forward_backward(model: torch.nn.Module, mix: torch.Tensor, stems: torch.Tensor) -> float:
    model.train()
    for p in model.parameters():
        p.grad = None
    start = time.perf_counter()
    loss = (model(mix) - stems).abs().mean()
    loss.backward()
    return time.perf_counter() - start


def time_optimizer_step(optimizer: torch.optim.Optimizer) -> float:
    start = time.perf_counter()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case and model (min reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--infer-seconds", type=float, default=10.0)
    parser.add_argument("--train-seconds", type=float, default=6.0)
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's malloc at its defaults")
    args = parser.parse_args()
    if not args.default_malloc:
        from danna_sep.runtime import keep_freed_memory

        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)

    models = build_models()
    gen = torch.Generator().manual_seed(0)
    mix_infer = torch.randn(1, 2, int(args.infer_seconds * SAMPLE_RATE), generator=gen)
    train_len = int(args.train_seconds * SAMPLE_RATE)
    stems = 0.5 * torch.randn(1, 4, 2, train_len, generator=gen)
    mix_train = stems.sum(dim=1)
    # the Adam cases run after the fwd+bwd case and step on its last gradients; tiny lr keeps the models intact
    optimizers = {
        (name, fused): torch.optim.Adam(model.parameters(), lr=1e-9, fused=fused)
        for name, model in models.items()
        for fused in (False, True)
    }

    cases = {
        f"inference {args.infer_seconds:g} s": lambda name: time_inference(models[name], mix_infer),
        f"fwd+bwd 1x{args.train_seconds:g} s": lambda name: time_forward_backward(models[name], mix_train, stems),
        "Adam step (foreach)": lambda name: time_optimizer_step(optimizers[name, False]),
        "Adam step (fused)": lambda name: time_optimizer_step(optimizers[name, True]),
    }
    times = {(case, name): [] for case in cases for name in models}
    for case, run in cases.items():
        for name in models:  # warm-up (allocator, Adam state)
            run(name)
        for _ in range(args.repeat):
            for name in models:
                times[case, name].append(run(name))
    best = {key: min(value) for key, value in times.items()}
    fwd_bwd = f"fwd+bwd 1x{args.train_seconds:g} s"
    for name in models:
        best["train step (foreach)", name] = best[fwd_bwd, name] + best["Adam step (foreach)", name]
        best["train step (fused)", name] = best[fwd_bwd, name] + best["Adam step (fused)", name]

    print(f"CPU, {torch.get_num_threads()} threads, batch 1, min of {args.repeat} interleaved runs")
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    print("parameters: " + ", ".join(f"{name} {n:,}" for name, n in params.items()))

    def count(module):
        return sum(p.numel() for p in module.parameters())

    shared = {name: (count(models[name].encoder), count(models[name].lstm.lstm)) for name in ("DemucsSplit", "v2")}
    print("encoder, BiLSTM parameters: " + ", ".join(f"{name} {e:,}, {b:,}" for name, (e, b) in shared.items()))
    if shared["DemucsSplit"] != shared["v2"]:
        raise SystemExit("the v2 peer's encoder or BiLSTM differs from ours: its ratio would not isolate the decoders")
    ours, *peers = models
    print(f"malloc: {'glibc defaults' if args.default_malloc else 'keep_freed_memory()'}")
    header = f"{'case':<22} {ours + ' s':>14}" + "".join(f" {peer + ' s':>16} {'ratio':>6}" for peer in peers)
    print(header)
    print("-" * len(header))
    for case in [*cases, "train step (foreach)", "train step (fused)"]:
        mine = best[case, ours]
        print(
            f"{case:<22} {mine:>14.2f}"
            + "".join(f" {best[case, peer]:>16.2f} {mine / best[case, peer]:>6.2f}" for peer in peers)
        )
    print("times are noisy when other jobs share the CPU; the min is the least disturbed run")


if __name__ == "__main__":
    main()
