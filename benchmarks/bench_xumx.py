"""Speed of X-UMX against Open-Unmix × 4 targets at the same sizes, same inputs, same run (CPU by default).

* inference: masks for 10 s of stereo (one item, 431 frames), applied to the mixture magnitude;
* training step: batch 4 × 6 s, model → CombinationLoss with one differentiable Wiener (EM) iteration →
  backward → Adam step; also the model's share alone (forward + backward of a plain mean of the masks).

The peer is ``openunmix.model.OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=512, nb_layers=3,
max_bin=1487)`` once per source: the same layers, parameters (±0.1 %) and LSTMs as X-UMX minus the two
bridges. It returns ``mask · |X|``; for the loss its output is divided by ``|X|`` back into a mask (one
division, negligible). ``openunmix`` imports ``torchaudio`` at package import although ``OpenUnmix`` does not
use it; an empty stand-in module is installed for this script only.

    .venv/bin/python benchmarks/bench_xumx.py [--repeat 3] [--threads 0] [--device cpu] [--only infer|model|train]

Runs the two alternately and prints the best of ``--repeat`` timings of each and the ratio
X-UMX / Open-Unmix (< 1: X-UMX is faster).
"""

import argparse
import sys
import time
import types
from collections.abc import Callable

import torch
from torch import Tensor, nn

from danna_sep.losses import CombinationLoss
from danna_sep.models.xumx import X_UMX
from danna_sep.spectral import STFT, num_frames


def open_unmix_peers(n: int = 4) -> nn.ModuleList:
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # see the module docstring
    from openunmix.model import OpenUnmix

    return nn.ModuleList(
        OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=512, nb_layers=3, max_bin=1487) for _ in range(n)
    )


class PeerMasks(nn.Module):
    """Open-Unmix × 4 as a mask estimator: magnitude (B, C, F, T) → (B, 4, C, F, T)."""

    def __init__(self):
        super().__init__()
        self.targets = open_unmix_peers()

    def forward(self, mag: Tensor) -> Tensor:
        return torch.stack([m(mag) for m in self.targets], 1) / (mag.unsqueeze(1) + 1e-8)


def best_of_interleaved(
    fa: Callable[[], object], fb: Callable[[], object], repeat: int, sync: Callable[[], None]
) -> tuple[float, float, float, float]:
    """Best wall and best CPU time of each: (wall a, wall b, cpu a, cpu b), measured alternately (a, b, b, a, …)
    so both see the same background load. CPU time (all threads of this process) is the steadier number when
    other jobs share the cores: waiting for a core does not count, only work (and thread spinning) does."""
    wall: tuple[list[float], list[float]] = ([], [])
    cpu: tuple[list[float], list[float]] = ([], [])
    for fn in (fa, fb):  # warm-up (allocator, MKL/oneDNN kernels)
        fn()
        sync()
    for r in range(repeat):
        order = ((0, fa), (1, fb)) if r % 2 == 0 else ((1, fb), (0, fa))
        for slot, fn in order:
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall[slot].append(time.perf_counter() - w0)
            cpu[slot].append(time.process_time() - c0)
    return min(wall[0]), min(wall[1]), min(cpu[0]), min(cpu[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timings per implementation (the minimum is reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--only",
        choices=["infer", "model", "train"],
        action="append",
        help="run only these cases (repeatable); default: all",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    def wanted(case):
        return not args.only or case in args.only

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)

    ours, peer = X_UMX().to(device), PeerMasks().to(device)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_peer = sum(p.numel() for p in peer.parameters())
    stft = STFT().to(device)
    rows = []

    # inference: 10 s stereo
    mix = torch.randn(1, 2, 441000, device=device) * 0.1
    mag = stft(mix).abs()
    ours.eval(), peer.eval()

    def infer(model: nn.Module) -> Callable[[], Tensor]:
        def run() -> Tensor:
            with torch.inference_mode():
                return model(mag) * mag.unsqueeze(1)

        return run

    if wanted("infer"):
        rows.append(("inference, 10 s stereo", *best_of_interleaved(infer(ours), infer(peer), args.repeat, sync)))

    if wanted("model") or wanted("train"):
        # training: batch 4 × 6 s, CombinationLoss with 1 MWF iteration, Adam
        stems = torch.randn(4, 4, 2, 264600, device=device) * 0.1
        mix = stems.sum(1)
        mix_stft = stft(mix)
        mag = mix_stft.abs()
        criterion = CombinationLoss(n_iter=1).to(device)
        ours.train(), peer.train()

        def model_only(model: nn.Module) -> Callable[[], None]:
            def run() -> None:
                model.zero_grad(set_to_none=True)
                model(mag).mean().backward()

            return run

        def train_step(model: nn.Module) -> Callable[[], None]:
            opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-5)

            def run() -> None:
                opt.zero_grad(set_to_none=True)
                loss, _ = criterion(model(mag), mix_stft, stems, mix)
                loss.backward()
                opt.step()

            return run

        if wanted("model"):
            rows.append(
                ("model fwd+bwd, 4 x 6 s", *best_of_interleaved(model_only(ours), model_only(peer), args.repeat, sync))
            )
        if wanted("train"):
            rows.append(
                (
                    "train step (MWF loss, Adam), 4 x 6 s",
                    *best_of_interleaved(train_step(ours), train_step(peer), args.repeat, sync),
                )
            )

    threads = torch.get_num_threads()
    print(
        f"X-UMX vs Open-Unmix x 4 on {device} (torch {torch.__version__}, {threads} threads), "
        f"best of {args.repeat}; frames: 10 s = {num_frames(441000)}, 6 s = {num_frames(264600)}"
    )
    print(f"parameters: X-UMX {n_ours:,}   Open-Unmix x 4 {n_peer:,}")
    print(
        f"{'case':<38} {'wall: X-UMX':>11} {'OUMX x4':>8} {'ratio':>6}   {'cpu: X-UMX':>10} {'OUMX x4':>8} {'ratio':>6}"
    )
    for name, w_ours, w_peer, c_ours, c_peer in rows:
        print(
            f"{name:<38} {w_ours:10.3f}s {w_peer:7.3f}s {w_ours / w_peer:6.2f}   "
            f"{c_ours:9.3f}s {c_peer:7.3f}s {c_ours / c_peer:6.2f}"
        )


if __name__ == "__main__":
    main()
