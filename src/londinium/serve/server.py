"""`londinium serve`: load a trained run (or a `londinium export` directory) and serve it until SIGTERM.

The port opens before the model is loaded (requests get 503 and /health says "loading" meanwhile);
a model that fails to load stops the server with its error. SIGTERM (or SIGHUP) drains: new requests get 503,
running ones finish within `serve.shutdown_timeout_s` or are cancelled (streams end with an error
event), then the process exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import uvicorn

from londinium.config import Config
from londinium.errors import LondiniumError
from londinium.serve.connections import connection_limits, listen, quiet_repeats
from londinium.serve.hosts import is_loopback
from londinium.serve.reports import Provenance

log = logging.getLogger("londinium.serve")


def run_loader(ws: Any, cfg: Config, run: str) -> tuple[Callable[[], Any], str, Provenance]:
    """A function that loads the engine, the model name it serves under by default, and where the
    model comes from. What can be checked cheaply (the checkpoint or export exists, the tokenizer is
    there) is checked now, so a wrong name fails before the port opens."""
    from londinium.checkpoint import find_checkpoint

    s, gen = cfg.serve, cfg.generate
    if gen.draft_run:  # the draft is loaded with the model; that it exists is checked now
        find_checkpoint(ws.checkpoints_dir(gen.draft_run), gen.draft_checkpoint, gen.draft_run)
    if s.export:
        directory = Path(s.export).expanduser()
        return (*export_loader(directory, s.device, cfg.generate, ws, s), Provenance.of_export(ws, directory))
    if not ws.tokenizer_file.is_file():
        raise LondiniumError(f"no tokenizer at {ws.tokenizer_file}: run `londinium tokenizer train` (or quickstart) first")
    ckpt = find_checkpoint(ws.checkpoints_dir(run), s.checkpoint, run)
    if s.context:  # a context the model cannot have (learned positions) fails before the port opens
        from londinium.checkpoint import CONFIG_FILE
        from londinium.config import load_config
        from londinium.model.gpt import check_context

        check_context(load_config(ckpt.path / CONFIG_FILE).model, s.context)

    def load() -> Any:
        from londinium.infer.engine import Engine
        from londinium.model.load import load_run

        trained = load_run(ws, run=run, checkpoint=str(ckpt.path), device=s.device, device_setting="serve.device")
        _serve_context(trained.model, s)
        return Engine.from_trained(trained, cfg.generate, ws)

    return load, run, Provenance.of_checkpoint(ws, run, ckpt)


def _serve_context(model: Any, s: Any) -> None:
    """The model at serve.context positions, with the warning when they go past its training."""
    from londinium.model.load import serve_context

    warning = serve_context(model, s.context, s.rope_scaling)
    if warning:
        print(f"londinium serve: warning: {warning}", file=sys.stderr)


def export_loader(directory: Path, device: str, gen: Any = None, ws: Any = None, s: Any = None) -> tuple[Callable[[], Any], str]:
    """The loader for a `londinium export` directory (transformers layout, read back into our GPT).
    The directory is checked whole now, before the port opens (`model.hf_check`: config against the
    weights' headers, paths, recorded hashes, finite weights), so a broken or hostile export is one
    line and exit 2; building the model is what runs in the background."""
    from londinium.model.hf_check import check_export

    checked = check_export(directory, say=lambda m: print(f"londinium serve: warning: {m}", file=sys.stderr))
    if s is not None and s.context:
        from londinium.model.gpt import check_context

        check_context(checked.config, s.context)

    def load() -> Any:
        from londinium.device import resolve_device
        from londinium.infer.engine import Engine
        from londinium.model.from_hf import load_export

        model, tokenizer = load_export(checked, resolve_device(device, setting="serve.device"))
        if s is not None:
            _serve_context(model, s)
        described = f"export {directory} ({model.num_params():,} parameters)"  # before any packing of the weights
        engine = Engine.with_settings(model, tokenizer, gen, ws)  # a draft (generate.draft_run) comes from `ws`
        engine.loaded_from = described
        return engine

    return load, directory.resolve().name


def serve(ws: Any, cfg: Config, run: str = "", export: str = "") -> int:
    """Serve until SIGTERM or Ctrl-C; returns the exit status (0 after a graceful SIGTERM)."""
    from londinium.config import validate
    from londinium.serve.app import create_app

    s = cfg.serve
    s.api_key = s.api_key or os.environ.get("LONDINIUM_API_KEY", "")
    run = run or s.run or cfg.train.run_name
    if export:
        s.export = export
    validate(cfg, "command line")  # command-line flags (--port, --host, ...) land here after the config was loaded
    load, default_name, provenance = run_loader(ws, cfg, run)
    import torch

    # The event loop and the SSE writes need a core of their own: with torch on every core, its
    # OpenMP threads spin while the event loop waits, and a one-sequence decode fell from ~700 to
    # ~30 tokens/s on 2 cores (benchmarks/serve_throughput.py --threads 2).
    torch.set_num_threads(s.threads or max(1, (os.cpu_count() or 1) - 1))
    name = s.model_name or default_name
    if not is_loopback(s.host) and not s.api_key:
        print(f"londinium serve: warning: listening on {s.host} without an API key: anyone who can reach it can use "
              "the model (set --api-key or $LONDINIUM_API_KEY)", file=sys.stderr)
    failed: list[BaseException] = []
    server: DrainingServer | None = None

    def load_failed(e: BaseException) -> None:
        failed.append(e)
        if server is not None:
            server.should_exit = True

    sock = listen(s.host, s.port, "londinium serve")  # now: a port in use is one line, before anything loads
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_repeats()  # a connection flood logs its condition once a minute, not a traceback per failed accept
    from londinium.serve.retrieval import retrieval_mount

    app = create_app(load, name, s, cfg.generate, on_load_error=load_failed, provenance=provenance, index=cfg.index,
                     mounts=[retrieval_mount(ws, cfg)])
    config = uvicorn.Config(app, host=s.host, port=s.port, access_log=False, log_level="info",
                            timeout_graceful_shutdown=int(s.shutdown_timeout_s) + 5, lifespan="on", **connection_limits(s))
    server = DrainingServer(config, app.state.server, s.shutdown_timeout_s)
    print(f"londinium serve: http://{s.host}:{s.port}/v1  model {name!r}  (loading {s.export or 'run ' + run})", file=sys.stderr)
    if s.playground:
        print(f"londinium serve: the playground is at http://{s.host}:{s.port}/", file=sys.stderr)
    server.run(sockets=[sock])
    sock.close()
    if failed:
        e = failed[0]
        if isinstance(e, LondiniumError):
            raise e
        raise LondiniumError(f"the model could not be loaded: {e}")
    if not server.started:
        raise LondiniumError(f"could not listen on {s.host}:{s.port} (is the port in use? choose another with --port)")
    return 0


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, with SIGTERM, SIGHUP (a closed terminal) and a first Ctrl-C as a drain: stop
    admitting, let running requests finish or cancel them at the deadline, exit 0; a second Ctrl-C
    forces the exit. (uvicorn alone re-raises the signal once it has shut down, so the process would
    die of it, and it does not catch SIGHUP at all, which killed the process mid-stream.) `state` has
    `draining` and `drain(timeout_s)`; the gateway runs under it too, with its own `label`."""

    def __init__(self, config: uvicorn.Config, state: Any, timeout_s: float, label: str = "londinium serve"):
        super().__init__(config)
        self.state, self.timeout_s, self.label = state, timeout_s, label

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        hup = getattr(signal, "SIGHUP", None)  # none on Windows
        main = hup is not None and threading.current_thread() is threading.main_thread()
        previous = signal.signal(hup, self.handle_exit) if main else None
        try:
            with super().capture_signals():
                yield
        finally:
            if main:
                signal.signal(hup, previous)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.state.draining and sig == signal.SIGINT:
            return super().handle_exit(sig, frame)  # a second Ctrl-C: uvicorn's forced exit
        if not self.state.draining:
            name = signal.Signals(sig).name
            log.info("%s: %s: draining (up to %.0f s for running requests)", self.label, name, self.timeout_s)
            threading.Thread(target=self.state.drain, args=(self.timeout_s,), name="londinium-drain", daemon=True).start()
        self.state.draining = True
        self.should_exit = True
