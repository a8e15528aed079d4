"""How big is an export, how long does it take to write, and how long does transformers take to load it?

    .venv/bin/python benchmarks/export_load.py [--workspace londinium-work] [--run main] [--repeats 3]

The peer is `transformers` itself: the same weights put into its own class (through
`model/hf_layout.py`) and written with `save_pretrained` plus the tokenizer's `save_pretrained`.
The script times, in alternating rounds in one process (median of --repeats), `londinium export`
(float32, --force, the model card and record included) against that `save_pretrained`, and
`AutoModelForCausalLM.from_pretrained` of our directory against the peer's; then once each in a
fresh interpreter (`python -c`, import included: what a user waits for). It prints the file sizes
of the float32, bfloat16 and float16 exports. Run it on a trained workspace (quickstart's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def _fresh_load_s(path: Path) -> float:
    code = ("import time; t = time.perf_counter(); from transformers import AutoModelForCausalLM, AutoTokenizer; "
            f"AutoTokenizer.from_pretrained({str(path)!r}); AutoModelForCausalLM.from_pretrained({str(path)!r}); "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-w", "--workspace", default="londinium-work")
    ap.add_argument("--run", default="main")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="toy sizes, one round (seconds): that the script runs, not its figures")
    args = ap.parse_args()
    if args.quick:
        args.repeats = 1

    import transformers

    from londinium.config import load_config
    from londinium.export.hf import hf_weights, model_config
    from londinium.export.run import export_run
    from londinium.model.load import load_run
    from londinium.workspace import Workspace

    ws = Workspace(args.workspace)
    cfg = load_config(None)
    trained = load_run(ws, args.run, "best")
    layout, weights = hf_weights(trained, "float32")
    keywords = {k: v for k, v in model_config(layout, trained, "float32").items() if k not in ("architectures", "torch_dtype")}
    hf_config = transformers.AutoConfig.for_model(keywords.pop("model_type"), **keywords)
    peer_model = getattr(transformers, layout.architecture)(hf_config).eval()
    peer_model.load_state_dict(weights, strict=False)
    peer_tok = transformers.AutoTokenizer.from_pretrained(ws.tokenizer_hf_dir)
    quiet = dict(log=lambda m: None)
    print(f"{trained.describe()}: {layout.architecture}")

    with tempfile.TemporaryDirectory() as tmp:
        ours, peer = Path(tmp) / "ours", Path(tmp) / "peer"
        times: dict[str, list[float]] = {"export": [], "save_pretrained": [], "load ours": [], "load peer": []}
        for _ in range(args.repeats):
            t = time.perf_counter()
            export_run(ws, cfg, run=args.run, out=ours, force=True, **quiet)
            times["export"].append(time.perf_counter() - t)
            t = time.perf_counter()
            peer_model.save_pretrained(peer)
            peer_tok.save_pretrained(peer)
            times["save_pretrained"].append(time.perf_counter() - t)
            for name, path in (("load ours", ours), ("load peer", peer)):
                t = time.perf_counter()
                transformers.AutoModelForCausalLM.from_pretrained(path)
                times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            print(f"  {k:<16} {v * 1000:8.1f} ms (median of {args.repeats})")
        print(f"  export / save_pretrained: {med['export'] / med['save_pretrained']:.2f}x; "
              f"load ours / load peer: {med['load ours'] / med['load peer']:.2f}x")
        fresh_ours, fresh_peer = _fresh_load_s(ours), _fresh_load_s(peer)
        print(f"  fresh interpreter, import + tokenizer + model: ours {fresh_ours:.2f} s, peer {fresh_peer:.2f} s "
              f"({fresh_ours / fresh_peer:.2f}x)")
        for dtype in ("float32", "bfloat16", "float16"):
            path = Path(tmp) / dtype
            export_run(ws, cfg, run=args.run, out=path, dtype=dtype, force=True, **quiet)
            weights_mb = (path / "model.safetensors").stat().st_size / 1e6
            print(f"  {dtype:<9} model.safetensors {weights_mb:6.2f} MB, directory {_dir_bytes(path) / 1e6:6.2f} MB")
        print(f"  peer directory (float32): {_dir_bytes(peer) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
