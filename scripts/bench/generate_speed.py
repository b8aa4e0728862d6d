"""Generation speed: characters per second of `lyricdist.sample.generate` under each RNN kernel, side by side.

    python scripts/bench/generate_speed.py                       # 2 x 256 LSTM, 16-d artist embedding, CPU
    python scripts/bench/generate_speed.py --layers 3 --hidden 300 --chars 400

Generation runs the RNN one character per call. Arms (same model, weights, seed and prompt, interleaved, median of
--repeats): lyricdist (what `use_for_inference` + `run_rnn` pick: on a CPU fp32 with PyTorch's native step),
fp32 oneDNN (the fused kernel forced for single steps) and, where the CPU computes bf16 natively, bf16 oneDNN.
The ratio is each arm's chars/s over lyricdist's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--vocab", type=int, default=60)
    p.add_argument("--artist-dim", type=int, default=16)
    p.add_argument("--chars", type=int, default=300)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from lyricdist import precision
    from lyricdist.model import CharRNN, ModelConfig
    from lyricdist.generate import generate

    cfg = ModelConfig(num_layers=args.layers, hidden_size=args.hidden, artist_embedding_dim=args.artist_dim)
    torch.manual_seed(0)
    base = CharRNN(cfg, args.vocab, num_artists=2 if args.artist_dim else 0).eval()
    state = {k: v.clone() for k, v in base.state_dict().items()}

    def arm(dtype: str, force_onednn: bool):
        model = CharRNN(cfg, args.vocab, num_artists=2 if args.artist_dim else 0).eval()
        model.load_state_dict(state)
        if dtype == "lyricdist":
            precision.use_for_inference(model, "cpu")
        else:
            precision.cast_rnn(model.rnn, precision.DTYPES[dtype])

        def run() -> float:
            native = precision._native_cpu_kernel
            if force_onednn:
                precision._native_cpu_kernel = __import__("contextlib").nullcontext
            try:
                t0 = time.perf_counter()
                generate(model, [1, 2, 3], args.chars, [1.0], generator=torch.Generator().manual_seed(0))
                return args.chars / (time.perf_counter() - t0)
            finally:
                precision._native_cpu_kernel = native
        run()  # warm-up
        return run

    arms = {"lyricdist": arm("lyricdist", False), "fp32 oneDNN": arm("fp32", True)}
    if precision.native_bf16(torch.device("cpu")):
        arms["bf16 oneDNN"] = arm("bf16", True)
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name, run in arms.items():
            rates[name].append(run())
    print(f"generate: {args.layers} x {args.hidden} LSTM, vocab {args.vocab}, artist embedding {args.artist_dim}; "
          f"CPU, {args.threads} torch threads; {args.chars} chars, median of {args.repeats} interleaved runs")
    ref = statistics.median(rates["lyricdist"])
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"{name:12} {med:10,.0f} chars/s  {1000 / med:7.3f} ms/char  {med / ref:5.2f}x")


if __name__ == "__main__":
    main()
