"""`aiidetect scan --engine ray`: the same Pipeline, spread over a Ray cluster with Ray Data.

Imported only when asked for; Ray is the `ray` extra (`pip install "aiidetect[ray]"`).

    file list (a Dataset of (index, path), one window at a time)
      -> map_batches(decode stage)   CPU tasks: read, hash, decode, preprocess, metadata detector
                                     (Pipeline.decoder_half().decode_many: the library's own code)
      -> map_batches(_ModelStage)    an actor pool; each actor builds the detectors once (backbone and
                                     heads) and runs Pipeline.complete: features, heads, fusion (with
                                     --file-timeout, in a model actor of its own that it kills past
                                     a batch's deadline)
      -> records, in input order, back to the driver (writers, results store)

Runs with no model detector (`-d metadata`) skip the actor pool: fusion runs in the CPU tasks.
The result cache (a local SQLite file) is not used by this engine; the results store (`--db`)
is, on the driver: unchanged files are skipped before anything is sent to the cluster.
See docs/scale.md for clusters, weights on every node, and sizing.
"""
from __future__ import annotations

import itertools
import json
import os
import pickle
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from ..crashguard import FILE_TIMEOUT, STRIKES_TO_REFUSE
from ..decode import Sample
from ..discover import Candidate, machine_id
from ..records import Record

# Paths handed to Ray per dataset execution. One window's (index, path) rows are held by the
# driver; actors start once per window, so larger windows amortise model loading.
WINDOW = 50000  # AIIDETECT_RAY_WINDOW


def _env_number(name: str, integer: bool = True) -> float | None:
    """A sizing setting from the environment, or None when unset; RayUnavailable, before any model is
    built, when it is not a number >= 1 (AIIDETECT_RAY_WINDOW=0 scanned no file at all and said
    'scanned 0 files', exit 0; 'abc' was an unexplained ValueError)."""
    import math

    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < 1:
        raise RayUnavailable(f"{name}={raw!r}: takes a {'whole ' if integer else ''}number >= 1 (docs/scale.md)")
    return value


def _settings() -> dict[str, float | None]:
    return {"window": _env_number("AIIDETECT_RAY_WINDOW"), "actors": _env_number("AIIDETECT_RAY_ACTORS"),
            "actor_cpus": _env_number("AIIDETECT_RAY_ACTOR_CPUS", integer=False),
            "task_start": _env_number("AIIDETECT_RAY_TASK_START", integer=False),
            "actor_start": _env_number("AIIDETECT_RAY_ACTOR_START", integer=False)}


# Retries of a task whose worker died (or, for the model actors, of a batch whose actor died).
TASK_RETRIES = 2
# Files of a window that may be lost to failed tasks and still be retried one by one; beyond this and
# half the window, the cluster is failing (RayJobFailed).
LOST_ALONE = 64


# Seconds a task is given to start (a worker process, its imports) before its files' allowance counts
# (--file-timeout, per file): a task of N files is cancelled after TASK_START + N * file_timeout seconds.
TASK_START = 60.0  # AIIDETECT_RAY_TASK_START
# The record's error code of a file whose task ran out of time with no other file in it.
TIMEOUT = "timeout"
# Seconds a model actor is given to build its detectors (load the backbone's weights, the first compile) before
# its first batch; its batches then get TASK_START + N * file_timeout each, as a task of N files does.
ACTOR_START = 600.0  # AIIDETECT_RAY_ACTOR_START
# The marker message of a file whose model batch ran past its deadline (the decode task's marker says "task").
MODEL_LATE = "its model batch ran past its deadline"


def task_deadline(files: int, file_timeout: float, start: float = TASK_START) -> float:
    """Seconds a task reading `files` files may run before it is cancelled: its start-up, then the
    allowance of each file (the whole task's, not each file's: a slow file borrows from fast ones)."""
    return start + file_timeout * max(1, files)


class RayUnavailable(RuntimeError):
    """Ray is not installed or the cluster cannot be reached: a fatal, explained error."""


class RayJobFailed(RuntimeError):
    """Most of a window's tasks failed: the cluster, not a file."""


@dataclass
class ModelSpec:
    """What an actor needs to build the same detectors as the driver (picklable:
    no built backbone travels; each actor builds its own once)."""

    families: list[str]
    ctx: dict[str, Any]
    fusion_model: dict[str, Any] | None
    batch_size: int
    limits: Any
    # The driver's detectors in the run's order, each (name, why it is unavailable there, or None): what a file
    # whose metadata decides its verdict is judged with when this node cannot build the model (_unbuilt).
    order: tuple[tuple[str, str | None], ...] = ()
    # The driver's `identity` of each detector's results (Plan.result_identities): a file judged on its metadata
    # alone by _unbuilt carries it, as the same record from the local engine does.
    identities: dict[str, str] | None = None

    @property
    def available(self) -> tuple[str, ...]:
        """The detectors the driver built: one this node makes an UnavailableDetector (no backbone weights,
        --device cuda without a GPU, a head damaged since) judged that actor's files on their metadata alone, a
        verdict the store kept as final, under a run identity saying the detector ran."""
        return tuple(name for name, why in self.order if why is None)

    def build(self):
        from ..detectors import RunContext, UnavailableDetector, create_detectors
        from ..pipeline import Pipeline

        ctx = RunContext(**self.ctx)
        dets = create_detectors(self.families, ctx)
        here = {d.name for d in dets if not isinstance(d, UnavailableDetector)}
        lost = [n for n in self.available if n not in here]
        if lost:
            fams = {n.split(":")[0] for n in lost}
            why = "; ".join(f"{d.name}: {d.reason}" for d in dets
                            if isinstance(d, UnavailableDetector) and d.family in fams)
            err = DetectorsUnavailableHere(f"{', '.join(lost)} unavailable on this node ({why or 'not made'})")
            # Each lost detector's own reason, as the local engine on this node writes it in its records.
            err.reasons = {n: next((d.reason for d in dets if isinstance(d, UnavailableDetector) and d.name == n),
                                   why or "not made") for n in lost}
            raise err
        return Pipeline(dets, self.fusion_model, batch_size=self.batch_size, workers=1, limits=self.limits)


class DetectorsUnavailableHere(RuntimeError):
    """A worker could not make detectors the driver made: its files get `internal-error` records, but for those
    their metadata decides (_unbuilt). `reasons`: each lost detector's own reason on this node."""

    reasons: dict[str, str] = {}


def _ctx_fields(ctx) -> dict[str, Any]:
    return {"backbone_spec": ctx.backbone_spec, "device": ctx.device, "dtype": ctx.dtype,
            "weights_dirs": list(ctx.weights_dirs), "runtime": ctx.runtime, "onnx_dir": ctx.onnx_dir,
            "options": dict(ctx.options)}


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayUnavailable(f"--engine ray needs Ray Data: pip install 'aiidetect[ray]' ({exc})") from None
    return ray


# How long a cluster address may take to accept a TCP connection before the scan gives up on it.
PROBE_SECONDS = 5.0


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a `HOST:PORT`, `[V6]:PORT` or `ray://HOST:PORT` address; None for `auto` and the like."""
    if address.startswith("ray://"):
        address = address[len("ray://"):].rstrip("/")
    if "://" in address or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _auto_target(address: str | None) -> str | None:
    """The HOST:PORT that ray.init("auto") goes to: $RAY_ADDRESS, else the address file `ray start`
    leaves (a stale one, of a head that is gone, made the scan wait as for a wrong port)."""
    if address != "auto":
        return address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    try:
        from ray._common.utils import get_ray_address_file

        with open(get_ray_address_file(None), encoding="utf-8") as fh:
            return fh.read().strip() or None
    except Exception:  # noqa: BLE001 - no file, or another Ray layout: ray.init decides alone
        return None


def _probe(address: str | None) -> None:
    """A HOST:PORT nothing answers on fails now: ray.init retries such an address for minutes, printing
    its own log lines, before it raises (a scan that seems to hang)."""
    import socket

    target = _auto_target(address)
    hp = _host_port(target or "")
    if hp is None:
        return
    if target != address:
        address = f"{address} ({target})"
    try:
        conn = socket.create_connection(hp, timeout=PROBE_SECONDS)
    except (OSError, ValueError, OverflowError) as exc:  # refused, unreachable, unknown host, port > 65535
        raise RayUnavailable(f"cannot reach Ray at {address}: nothing accepts a connection there "
                             f"({type(exc).__name__}: {exc}); start the head with `ray start --head --port=PORT`, "
                             "or check the address (docs/scale.md)") from None
    try:
        # (Ray Client, ray://, may sit behind a TLS proxy: its TCP connection is all that is checked.)
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("0", "", "false") and not target.startswith("ray://"):
            # The head's GCS speaks gRPC, HTTP/2 in clear: it answers the client preface with a SETTINGS frame.
            # Another service on the port (the dashboard's 8265, a web server) would leave ray.init retrying.
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            got = b""
            while len(got) < 9:
                chunk = conn.recv(9 - len(got))
                if not chunk:
                    break
                got += chunk
            if len(got) < 9 or got[3] != 0x04:
                raise OSError("it does not answer as gRPC (HTTP/2)")
    except OSError as exc:
        raise RayUnavailable(f"cannot reach Ray at {address}: something listens there but it is not a Ray head "
                             f"({exc}); give the head's GCS port (6379 by default, `ray start --head --port`), not "
                             "the dashboard's (8265); Ray Client takes ray://HOST:10001 (docs/scale.md)") from None
    finally:
        conn.close()


class _RayPrintsToStderr:
    """sys.stdout while this process drives Ray: what Ray's own driver threads print (the raylet's
    error messages: a worker that crashed, a task killed for memory, always printed by Ray to
    sys.stdout, whatever log_to_driver says) goes to stderr, so the records on stdout still parse.
    Every other thread writes to the real stdout unchanged."""

    def __init__(self, out, err):
        self._out, self._err = out, err
        self.closing = False  # ray.shutdown() prints the messages it held back, from the main thread

    def _sink(self):
        import threading

        return self._err if self.closing or threading.current_thread().name.startswith("ray_") else self._out

    def write(self, text):
        return self._sink().write(text)

    def writelines(self, lines):
        return self._sink().writelines(lines)

    def flush(self):
        return self._sink().flush()

    def __getattr__(self, name):  # fileno, isatty, buffer, encoding...: the real stdout's
        return getattr(self._out, name)


def _route_ray_prints(ray) -> None:
    import atexit
    import sys

    if isinstance(sys.stdout, _RayPrintsToStderr) or sys.stdout is None or sys.stderr is None:
        return
    proxy = sys.stdout = _RayPrintsToStderr(sys.stdout, sys.stderr)

    def shutdown() -> None:  # registered after ray.init's own: runs first, so Ray's finds nothing left to do
        proxy.closing = True
        try:
            ray.shutdown()
        finally:
            proxy.closing = False

    atexit.register(shutdown)


def connect(address: str | None, quiet: bool = False) -> None:
    """Check the sizing settings, import Ray and start or reach it (RayUnavailable, one line, when
    that cannot be done). `quiet`: Ray's own log lines and progress on stderr are errors only."""
    _settings()
    _connect(_import_ray(), address, quiet)


def _quiet(ray) -> None:
    """Errors only from Ray on this process's stderr (`scan -q`): its driver's INFO and WARNING lines
    (starting an instance, the token set-up) and Ray Data's (each dataset's plan and progress,
    logged every few seconds when stderr is not a terminal) were ~13 lines of a quiet scan. Ray Data
    keeps writing its full log to the session's log folder."""
    import logging

    logging.getLogger("ray").setLevel(logging.ERROR)
    data_log = logging.getLogger("ray.data")  # propagates nowhere: its console handler prints
    for handler in data_log.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def _connect(ray, address: str | None, quiet: bool = False) -> None:
    if quiet:
        _quiet(ray)
    if ray.is_initialized():
        return  # a caller (a test, a notebook) started Ray already
    _probe(address)
    import signal
    import threading

    # ray.init sets its own SIGTERM handler in the driver, sys.exit(15): a scan stopped by `timeout` or a
    # scheduler then exited 15, without the stop that Ctrl-C gets (commands.errors.stop_on_signals, 143).
    main = threading.current_thread() is threading.main_thread()
    term = signal.getsignal(signal.SIGTERM) if main else None
    try:
        # No address: a new Ray instance of this process ("local"), never a cluster Ray finds on its own
        # (a stale /tmp/ray address file would make the scan wait for a head that is gone).
        ray.init(address=address or "local", log_to_driver=False, include_dashboard=False,
                 **({"logging_level": "ERROR"} if quiet else {}))
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, grpc errors...
        raise RayUnavailable(_init_failed(address, exc)) from None
    except SystemExit as exc:
        # A SIGTERM while ray.init ran (it takes seconds) met Ray's handler: the scan exited 15, with no
        # word and no stop. It is this process's handler's to answer (commands.errors: 143, "terminated").
        if term is not None and exc.code == signal.SIGTERM:
            signal.signal(signal.SIGTERM, term)
            if callable(term):
                term(signal.SIGTERM, None)
            elif term == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGTERM)
        raise
    finally:
        if term is not None:
            signal.signal(signal.SIGTERM, term)
    _route_ray_prints(ray)


def _init_failed(address: str | None, exc: Exception) -> str:
    """Why ray.init failed, and what to do about it."""
    if address == "auto" and "Could not find any running Ray instance" in str(exc):
        # Ray's own text names its CLI's `--address` flag; the token hint fitted a head that refused us,
        # not a head that is not there.
        return ("--engine ray --address auto: no Ray cluster is running on this machine (no $RAY_ADDRESS, no head "
                "started here by `ray start --head`); start one with `ray start --head --port=6379`, give a "
                "head's address (--address HOST:6379 or ray://HOST:10001), or leave out --address to run Ray on "
                "this machine alone (docs/scale.md)")
    hint = ("; clusters started with `ray start` (Ray >= 2.59) require a token: run with RAY_AUTH_MODE=token "
            "and the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN (docs/scale.md)") if address else ""
    return f"cannot start or reach Ray at {address or 'a local instance'}: {type(exc).__name__}: {exc}{hint}"


class _Model:
    """The backbone and heads, built once, then batch after batch."""

    def __init__(self, spec: ModelSpec, threads: int):
        try:
            import torch

            torch.set_num_threads(max(1, threads))
        except ImportError:
            pass
        self.pipe, self.broken, self._spec, self._reasons = None, None, spec, {}
        try:
            self.pipe = spec.build()
        except Exception as exc:  # noqa: BLE001 - in every record of its batches, never hidden
            self._reasons = dict(getattr(exc, "reasons", None) or {})
            # Kept, not raised: raised from an actor's constructor, Ray Data failed the whole dataset (exit 2, a
            # traceback of ~200 lines, no record at all) or, in other versions, retried the pool for ever. A head
            # damaged after the driver checked it, a backbone this node cannot load, memory raised as an error:
            # each of the batch's files gets a record saying so, in bounded time.
            self.broken = _why(exc)

    def ready(self) -> str | None:
        """None once the detectors are built; else why they could not be."""
        return self.broken

    def complete(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.broken is not None:
            return _unbuilt(batch, self.broken, self._spec, self._reasons)
        samples = [pickle.loads(b) for b in batch["sample"]]
        return {"i": batch["i"], "record": [_dump(r) for r in _complete(self.pipe, samples)]}


def _why(exc: BaseException, limit: int = 600) -> str:
    """One line for a record's message. A creation task's error from Ray is its traceback, the error itself on its
    last line (cut at the head's 600 characters, `OSError: libcudart.so...` was lost) and colour codes: the head
    and the tail are kept, control characters dropped."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m|[\x00-\x1f\x7f]", " ", f"{type(exc).__name__}: {exc}").split())
    return text if len(text) <= limit else f"{text[:limit // 3]} ... {text[-(limit - limit // 3):]}"


def _unbuilt(batch: dict[str, Any], why: str, spec, reasons: dict[str, str] | None = None) -> dict[str, Any]:
    """The records of a model batch whose actor could not build its detectors: a file with an error of its own
    (unreadable, decode-error) keeps it; a file whose metadata decides its verdict (decisive evidence: rule 2, the
    model cannot change it) gets the record the local engine gives it with those detectors unavailable; every
    other one is `internal-error`, its metadata results kept."""
    from ..detectors.base import Detector
    from ..fusion import fusion_identity, split_results
    from ..pipeline.stages import finish
    from ..records import DetectorResult

    fusion_model = spec.fusion_model
    # The run's fusion, as every other record names it: {} there broke the schema's "kind" (rules or model).
    info = fusion_identity(fusion_model)
    order = list(getattr(spec, "order", ()) or ())
    out = []
    for b in batch["sample"]:
        s = pickle.loads(b)
        if s.record is None:
            s.record = Record(file=s.path)
        rec = s.record
        if rec.error is None and order and split_results(rec.detectors)[2]:
            # An SD `parameters` PNG, a signed C2PA AI declaration: an `internal-error` here was verdict "error"
            # where the local engine, with the same detectors unavailable, judged the file on its metadata.
            for name, driver_why in order:
                if name not in rec.detectors:
                    rec.detectors[name] = DetectorResult.unavailable(
                        driver_why or (reasons or {}).get(name)
                        or f"could not be built on the Ray worker that was given this file: {why}")
            out.append(_dump(finish(s, [Detector(n) for n, _ in order], fusion_model, info,
                                    getattr(spec, "identities", None))))
            continue
        if rec.error is None:
            rec.set_error("internal-error", f"the model detectors could not be built on the Ray worker that "
                          f"was given this file, so they did not run on it: {why} (docs/scale.md)")
        out.append(_dump(finish(s, [], fusion_model, info)))
    return {"i": batch["i"], "record": out}


class _ModelStage:
    """One per actor of Ray Data's pool. Without a deadline it is the model itself. With one (--file-timeout) it
    holds the pool's CPUs and GPU and hands each batch to an actor of its own (_Model, on the same node, asking
    for nothing, seeing this actor's GPU), waited for until the batch's deadline (task_deadline): a call that
    never returns (a backbone stuck in native code, a worker stopped by SIGSTOP, a GPU that hangs) blocked the
    driver for ever, as Ray has no deadline and Ray Data hands the driver no actor to kill. Past it, the model
    actor is killed (ray.kill) and the batch's files come back as TIMEOUT markers, which the driver tries again
    alone (_records), as it does a decode task's; the next batch starts a new model actor."""

    def __init__(self, spec: ModelSpec, threads: int, file_timeout: float | None = None,
                 start: float = TASK_START, actor_start: float = ACTOR_START):
        self._spec, self._threads = spec, threads
        self._deadline = (file_timeout, start, actor_start) if file_timeout else None
        self._model = None
        self._broken: str | None = None  # why the model actor could not be created: its batches' records say it
        if self._deadline is None:
            self._run = _Model(spec, threads).complete  # a build that raises: _Model.complete's records say why
        else:
            import ray

            try:
                self._model = self._start()
            except ModelActorLate as exc:
                # Raised from here it ended the scan (exit 2, a traceback, no record for the rest of it). Not started
                # again by each batch (the allowance each time): this pool actor's files get records saying why.
                self._broken = str(exc)
            except ray.exceptions.RayActorError as exc:
                # Raised here, Ray Data waits for this pool actor for ever, or fails the whole dataset. Its
                # creation failed (the spec could not even be unpickled there: _Model's own build errors come
                # back from ready()): every batch's files get records saying so. Died each time it was started:
                # the first batch starts it again and fails if it cannot, its files tried alone (_send).
                if getattr(exc, "actor_init_failed", False):
                    self._broken = _why(getattr(exc, "cause", None) or exc)
                self._model = None

    def _start(self):
        """A new model actor, once it has built its detectors (ModelActorLate past ACTOR_START: killed)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        global _REMOTE_MODEL
        if _REMOTE_MODEL is None:
            _REMOTE_MODEL = ray.remote(_Model)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        opts: dict[str, Any] = {"num_cpus": 0, "num_gpus": 0, "max_restarts": 0, "scheduling_strategy": here}
        gpus = ray.get_gpu_ids()
        if gpus:
            opts["runtime_env"] = {"env_vars": _model_env(gpus)}
        for attempt in range(TASK_RETRIES + 1):
            model = _REMOTE_MODEL.options(**opts).remote(self._spec, self._threads)
            ready, _ = ray.wait([model.ready.remote()], timeout=self._deadline[2])
            if not ready:
                ray.kill(model, no_restart=True)
                raise ModelActorLate(f"the model actor did not start within {self._deadline[2]:g} s "
                                     "(AIIDETECT_RAY_ACTOR_START)")
            try:
                ray.get(ready[0])  # why a model could not be built comes back as a value: its batches' records
            except ray.exceptions.RayActorError as exc:
                # Its process died while building (the out-of-memory killer at the backbone's load, its peak; a
                # kill -9): raised from this pool actor's constructor, Ray Data waited for the pool for ever, no
                # record, no exit. A new one, as a batch's dead model actor gets; a build that raises is final.
                if getattr(exc, "actor_init_failed", False) or attempt == TASK_RETRIES:
                    raise
                continue
            return model
        raise AssertionError("unreachable")

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = self._records(batch)
        # The decoding node's versions ride with each row to the driver (_DecoderCheck): the pixels and metadata
        # evidence are theirs.
        out["decoders"] = batch["decoders"] if "decoders" in batch else [""] * len(out["i"])
        return out

    def _records(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self._deadline is None:
            return self._run(batch)
        import ray

        file_timeout, start, _ = self._deadline
        if self._broken is not None:
            return _unbuilt(batch, self._broken, self._spec)
        for attempt in range(TASK_RETRIES + 1):
            if self._model is None:
                try:
                    self._model = self._start()
                except ModelActorLate as exc:
                    # (a new one after a batch's deadline or a death): its batch failed, and alone each of its files
                    # waited for the allowance again, then was `crashed` or stopped the scan.
                    self._broken = str(exc)
                    return _unbuilt(batch, self._broken, self._spec)
            ref = self._model.complete.remote(batch)
            ready, _ = ray.wait([ref], timeout=task_deadline(len(batch["i"]), file_timeout, start))
            if not ready:
                ray.kill(self._model, no_restart=True)
                self._model = None
                return _model_timed_out(batch)
            try:
                return ray.get(ready[0])
            except ray.exceptions.RayActorError:
                # The model actor died (a crash, memory): a new one, as Ray Data restarts its own; past the
                # retries the block fails and the driver tries its files again alone.
                self._model = None
                if attempt == TASK_RETRIES:
                    raise
        raise AssertionError("unreachable")


_REMOTE_MODEL = None


class ModelActorLate(RuntimeError):
    """A model actor did not build its detectors within its allowance (AIIDETECT_RAY_ACTOR_START): killed, and the
    pool actor's files get records saying so (_unbuilt)."""


def _model_env(gpus: list) -> dict[str, str]:
    """The environment of a model actor whose pool actor holds `gpus`. Asking for no GPU, it would see every GPU
    of the node: Ray leaves the variable alone for an actor with none, unless the cluster sets
    RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO, with which Ray blanked it (the model on the CPU, or failing on `cuda`)."""
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus), "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}


def _model_timed_out(batch: dict[str, Any]) -> dict[str, Any]:
    """The rows of a model batch past its deadline: each file a TIMEOUT marker record."""
    out = []
    for b in batch["sample"]:
        path = pickle.loads(b).path
        out.append(_dump(Record(file=path).set_error(TIMEOUT, MODEL_LATE)))
    return {"i": batch["i"], "record": out}


def _failed(path: str, index: int, exc: Exception) -> Sample:
    return Sample(index=index, path=path, record=Record(file=path).set_error("internal-error",
                                                                             f"{type(exc).__name__}: {exc}"))


def _complete(pipe, samples: list[Sample]) -> list[Record]:
    """pipe.complete, a bug in it costing its batch's files internal-error records, not the batch: a block
    that comes back to the driver without its records must mean a worker process that died (crashed)."""
    from ..pipeline.stages import finish

    try:
        return pipe.complete(samples)
    except Exception as exc:  # noqa: BLE001 - in the records, never hidden
        return [finish(_failed(s.path, s.index, exc), pipe.detectors, pipe.fusion_model, pipe.fusion_info)
                for s in samples]


def node_versions() -> dict[str, str | None]:
    """The versions of the process that reads the files: its decoders (extras.decoder_versions, read once a
    process) and the metadata detector's parsers (extras.METADATA_PARSERS). A node with another Pillow or libjpeg
    gives other pixels; one with another exifread or without c2pa-python, other metadata evidence."""
    from ..extras import METADATA_PARSERS, decoder_versions, running_versions

    return {**decoder_versions(), **running_versions(METADATA_PARSERS)}


_unlike: dict[str, str] = {}


def versions_unlike(here: dict[str, str | None]) -> str:
    """What a worker sends with each row (_DecoderCheck): its node_versions that differ from `here`, the driver's,
    as JSON; "" when none differ. The whole set was sent with every row (~250 bytes of JSON each, more with the
    parsers); a node like the driver now sends nothing, another only what differs. Read once per worker process."""
    key = json.dumps(here, sort_keys=True)
    if key not in _unlike:
        mine = node_versions()
        diff = {k: mine.get(k) for k in sorted(set(mine) | set(here)) if mine.get(k) != here.get(k)}
        _unlike[key] = json.dumps(diff, sort_keys=True) if diff else ""
    return _unlike[key]


def _decode_stage(half, finish: bool, here: dict[str, str | None]):
    """The CPU task body; with finish (no model detectors) it completes the records too. Each row carries the
    versions of the worker that decoded it and ran its metadata detector where they differ from `here`, the
    driver's node_versions (versions_unlike; sent with the task's function), which the driver checks its rows
    against (_DecoderCheck: the same snapshot)."""
    listed_on = machine_id()

    def fn(batch: dict[str, Any]) -> dict[str, Any]:
        out = _decoded(batch)
        out["decoders"] = [versions_unlike(here)] * len(out["i"])
        return out

    def _decoded(batch: dict[str, Any]) -> dict[str, Any]:
        cands = [pickle.loads(b) for b in batch["cand"]]
        if machine_id() != listed_on:  # another node: its device numbers for the share are its own
            for c in cands:
                c.ident = None
        try:
            samples = half.decode_many(cands, batch["i"])
        except Exception as exc:  # noqa: BLE001 - see _complete
            samples = [_failed(c.path, int(i), exc) for c, i in zip(cands, batch["i"])]
        if finish:
            return {"i": batch["i"], "record": [_dump(r) for r in _complete(half, samples)]}
        for s in samples:  # the bytes are gone already (DecodeStage.drop_bytes): the model needs pixels only
            if not half.keep_image:
                s.image = None
        return {"i": batch["i"], "sample": [pickle.dumps(s, protocol=5) for s in samples]}
    return fn


_REMOTE_CALL = None


def _call(fn, batch):
    return fn(batch)


def _with_deadline(fn, finish: bool, file_timeout: float, start: float):
    """The task body `fn`, run in a task of its own that this one waits for until its deadline (task_deadline),
    then cancels with force=True: its worker process is killed, whatever it was doing (a decoder stuck on a
    crafted file, a read a network filesystem never answers, a worker stopped by SIGSTOP); Ray has no deadline
    of its own, and Ray Data hands the driver no task to cancel. The files of a cancelled task come back as
    TIMEOUT error records, which the driver takes for files to try again alone (_records). The inner task asks
    for no CPU and runs on the same node: it uses the CPU its waiting task holds (an actor, where Ray Data fuses
    this stage into the model actors, keeps its CPUs while it waits: an inner task asking for one starved, and
    every batch ran out of time, when the actors filled the cluster)."""
    held: list = []

    def run(batch: dict[str, Any]) -> dict[str, Any]:
        import ray

        global _REMOTE_CALL
        if _REMOTE_CALL is None:
            _REMOTE_CALL = ray.remote(_call)
        if not held:
            held.append(ray.put(fn))  # once per worker, not pickled with every batch
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        ref = _REMOTE_CALL.options(num_cpus=0, max_retries=TASK_RETRIES,
                                   scheduling_strategy=here).remote(held[0], batch)
        ready, _ = ray.wait([ref], timeout=task_deadline(len(batch["i"]), file_timeout, start))
        if ready:
            # A worker that died after its retries raises here: this task fails and its block is dropped, as
            # before (the driver tries its files again alone).
            return ray.get(ref)
        ray.cancel(ref, force=True)
        return _timed_out(batch, finish)
    return run


def _timed_out(batch: dict[str, Any], finish: bool) -> dict[str, Any]:
    """The rows of a cancelled task: in the columns the next stage expects, each a TIMEOUT marker record."""
    out = []
    for b, i in zip(batch["cand"], batch["i"]):
        path = pickle.loads(b).path
        rec = Record(file=path).set_error(TIMEOUT, "its task ran past its deadline")
        out.append(_dump(rec) if finish else pickle.dumps(Sample(index=int(i), path=path, record=rec), protocol=5))
    return {"i": batch["i"], ("record" if finish else "sample"): out, "decoders": [""] * len(out)}


def _dump(rec: Record) -> bytes:
    # The Record itself, not its JSON: the driver writes the store from the same object a local run does.
    # A JSON round trip is another spelling of the record (to_dict rounds, drops, renames), and a Ray
    # store's p_ai column once differed from a local store's that way.
    return pickle.dumps(rec, protocol=5)


def run(pipe, candidates: Iterable[Candidate], families: list[str], ctx, address: str | None = None,
        actors: int | None = None, actor_cpus: float | None = None, actor_gpus: float | None = None,
        window: int | None = None, quiet: bool = False, file_timeout: float | None = FILE_TIMEOUT,
        own_stderr: bool = False, note: Callable[[str], None] | None = None) -> Iterator[Record]:
    """Records for `candidates`, in order, computed on Ray. `pipe` is the
    driver's Pipeline (its settings, statistics and results-store hook);
    families and ctx say how each actor builds the same detectors. Connects
    before returning, so a missing Ray or an unreachable cluster raises
    RayUnavailable here, before any output. `file_timeout`: seconds per file of a
    task's deadline (task_deadline, --file-timeout); None or 0: no deadline. `own_stderr`: the process is the
    scan's (the command line), whose stderr quiet may filter (_without_pool_notice); a library host's never.
    `note`: where a node's other decoder versions are said (_DecoderCheck; the aiidetect logger by default)."""
    _settings()
    ray = _import_ray()
    if pipe.prior is None:
        _connect(ray, address, quiet)   # reached here: the first file sent does not reach it again
    # With a results store every file may be resumed from it: the cluster is reached when the first file
    # must be sent, so a fully resumed run starts no local Ray instance (tens of seconds, a few hundred MB
    # of processes, for nothing). Its address was already probed (preflight).
    return _records(ray, pipe, candidates, families, ctx, actors, actor_cpus, actor_gpus, window, file_timeout,
                    connect=(lambda: None) if pipe.prior is None else (lambda: _connect(ray, address, quiet)),
                    drop_pool_notice=quiet and own_stderr, note=note)


# What Ray's C++ core worker writes on this process's stderr, once per model pool actor started: Ray Data (2.60)
# hands every pool actor its DataContext and map function by object reference (ActorPoolMapOperator._start_actor,
# whatever the function's own arguments) and asks for restarts (max_restarts=-1), a pair the core worker reports
# at level ERROR. max_restarts=0 would remove it, but Ray Data then keeps a dead actor in its pool unreplaced.
# Anchored on Ray's own log prefix ([date time,ms E pid tid]): a line of ours that quotes it (a file named so, in a
# message) is kept.
POOL_NOTICE = re.compile(rb"^\[[^\]\n]* E \d+ \d+\] core_worker\.cc:\d+: Actor with class name: "
                         rb"'MapWorker\([^'\n]*_ModelStage\)+' and ID: '[0-9a-f]+' has constructor arguments in the "
                         rb"object store and max_restarts > 0\.")

# The filter, a process of its own: it copies what it reads (fd 0) to the real stderr (fd 1), but POOL_NOTICE's
# lines, until every writer is gone. A thread of the scan did this before, and died with it: a crash of this
# process (Ray's C++ `Check failed` and its stack, then abort(); a faulthandler dump; os._exit after a last
# message) left its last words in the pipe, unread. A process of its own reads them once this one is gone, needs no
# GIL, and, in a session of its own, is not stopped by the terminal's Ctrl-C or hang-up before the scan is.
_FILTER = r"""
import os, re, sys
notice, rest = re.compile(os.fsencode(sys.argv[1])), b""
def out(data):
    while data:
        try:
            data = data[os.write(1, data):]
        except OSError:  # the reader of stderr left: keep reading, so that no writer blocks
            return
while True:
    try:
        chunk = os.read(0, 65536)
    except OSError:
        chunk = b""
    if not chunk:
        out(b"" if notice.search(rest) else rest)
        break
    *lines, rest = (rest + chunk).split(b"\n")
    if len(rest) > 65536:  # a line that long is not the notice: memory stays bounded
        lines, rest = lines + [rest], b""
        out(b"".join(line + b"\n" for line in lines[:-1] if not notice.search(line)) + lines[-1])
    else:
        out(b"".join(line + b"\n" for line in lines if not notice.search(line)))
"""


def _without_pool_notice(records: Iterator[Record]) -> Iterator[Record]:
    """`records`, with this process's stderr (fd 2) read through a pipe while they are made: a filter process
    (_FILTER) copies every line written there to the real stderr, in order, but POOL_NOTICE's (`scan -q`: an ERROR
    line on every model scan that no Python logging setting reaches, written by C++ straight to fd 2). Only for the
    command line, whose process is the scan's (never a library host's stderr); where stderr is not fd 2, or the
    filter cannot be started, nothing is changed."""
    import subprocess
    import sys

    try:
        sys.stderr.flush()
        real = os.dup(2) if sys.stderr.fileno() == 2 else None
    except (AttributeError, OSError, ValueError):  # no fileno (a test runner's stream), or closed
        real = None
    if real is None:
        yield from records
        return
    read, write = os.pipe()
    try:
        child = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER, os.fsdecode(POOL_NOTICE.pattern)],
                                 stdin=read, stdout=real, stderr=real, start_new_session=True)
    except OSError:
        for fd in (read, write, real):
            os.close(fd)
        yield from records
        return
    os.close(read)
    os.dup2(write, 2)
    os.close(write)
    try:
        yield from records
    finally:
        try:
            sys.stderr.flush()
        finally:
            os.dup2(real, 2)  # the pipe's last writer here: the filter copies the rest, then ends
            os.close(real)
            try:
                # What was written before this point reaches stderr before what is written after it.
                child.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                pass  # a process started meanwhile holds the pipe open: its lines still come through, later


def preflight(address: str | None) -> None:
    """What `connect` checks in seconds, without starting or joining Ray: the sizing settings, Ray
    installed, and an address that something answers on as a Ray head (RayUnavailable)."""
    _settings()
    ray = _import_ray()
    if not ray.is_initialized():
        _probe(address)


def _records(ray, pipe, candidates, families, ctx, actors, actor_cpus, actor_gpus, window,
             file_timeout: float | None = None, connect=lambda: None, drop_pool_notice: bool = False,
             note: Callable[[str], None] | None = None) -> Iterator[Record]:
    env = _settings()
    window = window or int(env["window"] or WINDOW)
    start = env["task_start"] or TASK_START
    guard = pipe.guard
    # The stages are planned on the cluster once, when a file first has to go there.
    plan = None
    it = iter(candidates)
    base = 0
    while True:
        chunk = list(itertools.islice(it, window))
        if not chunk:
            break
        todo = []
        for k, c in enumerate(chunk):
            done = pipe.prior(c.path) if (pipe.prior is not None and c.error is None) else None
            refused = guard.refused(c.path) if (done is None and guard is not None and c.error is None) else None
            if done is not None:
                # Unchanged since an earlier run: nothing goes to the cluster for it.
                pipe.stats.resumed += 1
                pipe.count(done)
                yield done
            elif refused is not None:
                # It ended the process reading it in earlier runs of the store (a worker, or a local scan).
                rec = Record(file=c.path).set_error("crashed", refused)
                yield from pipe.complete([Sample(index=base + k, path=c.path, record=rec)])
            else:
                todo.append({"i": base + k, "cand": pickle.dumps(c, protocol=5)})
        first = base
        base += len(chunk)
        if not todo:
            continue
        if plan is None:
            connect()
            check = _DecoderCheck(pipe, note or _log_warning)
            plan = _plan(ray, pipe, families, ctx, actors, actor_cpus, actor_gpus, file_timeout, start, check.mine)
        stages, cpus = plan
        sent = _send(ray, pipe, todo, chunk, first, stages, cpus, file_timeout, start, check)
        # (from here, not around connect(): the Ray processes it starts would hold the pipe open for ever)
        yield from _without_pool_notice(sent) if drop_pool_notice and pipe.groups else sent


def _plan(ray, pipe, families, ctx, actors, actor_cpus, actor_gpus, file_timeout, start, here):
    """The Ray Data stages for this scan, sized on the cluster, and its CPU count. `here`: the driver's
    node_versions, which each row's versions are told apart from (_decode_stage)."""
    from ..pipeline import Pipeline

    data_ctx = ray.data.DataContext.get_current()
    data_ctx.execution_options.preserve_order = True  # records come back in input order, like the local engine
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 1)), float(res.get("GPU", 0))
    env = _settings()
    has_model = bool(pipe.groups)
    use_gpu = has_model and gpus >= 1 and ctx.device in ("auto", "cuda")
    if actor_gpus is None:
        actor_gpus = 1.0 if use_gpu else 0.0
    if actor_cpus is None:
        # Half of the smallest node: an actor must fit on one node, and the other half decodes.
        node_cpus = [float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
        smallest = min([c for c in node_cpus if c > 0] or [cpus])
        actor_cpus = env["actor_cpus"] or float(1 if use_gpu else max(1, int(smallest) // 2))
    if actors is None:
        actors = int(env["actors"] or (int(gpus) if use_gpu else max(1, int(cpus // (2 * actor_cpus)))))
    if has_model:
        _check_pool(ray.nodes(), actors, actor_cpus, actor_gpus)
    # Without a model (e.g. -d metadata, or model families unavailable here) every detector is light and
    # picklable: the CPU tasks run the whole pipeline. Otherwise they run its decode half.
    half = pipe.decoder_half() if has_model else Pipeline(pipe.detectors, pipe.fusion_model, pipe.batch_size, 1,
                                                          pipe.limits)
    fields = _ctx_fields(ctx)
    if has_model and not use_gpu and ctx.device in ("auto", "cpu"):
        from ..backbone import resolve_dtype

        # The driver's choice, which the records and the store's run identity name: under --dtype auto an actor
        # on a node whose CPU lacks native bfloat16 chose float32 for itself (other records, same identity).
        fields["dtype"] = resolve_dtype(ctx.dtype, "cpu")
    from ..detectors import UnavailableDetector

    spec = ModelSpec(families, fields, pipe.fusion_model, pipe.batch_size, pipe.limits,
                     tuple((d.name, d.reason if isinstance(d, UnavailableDetector) else None) for d in pipe.detectors),
                     dict(pipe.result_identities))
    # Finite retries: by default Ray retries a task whose worker died forever, so one file that crashes a
    # decoder hung the scan; a failed block is skipped, not the end of the job (see _execute).
    data_ctx.max_errored_blocks = -1
    decode = _decode_stage(half, not has_model, here)
    if file_timeout:
        decode = _with_deadline(decode, not has_model, file_timeout, start)
    if has_model:
        stages = [(decode, {"num_cpus": 1, "max_retries": TASK_RETRIES}),
                  (_ModelStage, {"fn_constructor_args": (spec, int(actor_cpus), file_timeout, start,
                                                         env["actor_start"] or ACTOR_START),
                                 "compute": ray.data.ActorPoolStrategy(size=actors), "num_cpus": actor_cpus,
                                 "num_gpus": actor_gpus, "max_task_retries": TASK_RETRIES})]
    else:
        stages = [(decode, {"num_cpus": 1, "max_retries": TASK_RETRIES})]
    return stages, cpus


class _DecoderCheck:
    """Each row's versions, as the worker that decoded it reported those that differ from this process's
    (versions_unlike; a full set is taken as well), against this process's, which the records and a --db run's
    identity name. Nothing compared them: a node with another Pillow or libjpeg-turbo gave other pixels for some
    files, and its records were stored under this process's run. A row from such a node, where a version its
    file's pixels go through differs, or one of the metadata detector's parsers when the scan runs it (a node
    without c2pa-python finds no C2PA manifest), is counted (stats `other_decoders`) and the differing versions
    said once (`note`); with a results store the scan stops there (RayJobFailed), before that record is written or
    stored."""

    def __init__(self, pipe, note: Callable[[str], None]):
        from ..metadata.detector import MetadataDetector

        self.pipe, self.note = pipe, note
        self.mine = node_versions()
        # The parsers count for every file when the scan runs the metadata detector (on the nodes, beside the
        # decode: Pipeline.decoder_half), whatever its format: exifread and C2PA read JPEG, PNG, TIFF, HEIF, WebP.
        self.parsers = {p for d in getattr(pipe, "worker_dets", ()) if isinstance(d, MetadataDetector)
                        for p in d.parsers()}
        self.nodes: dict[str, dict] = {}  # a row's versions_unlike -> those versions
        self.said: set[str] = set()

    def __call__(self, there: str, rec: Record) -> None:
        """Only the versions `rec`'s pixels go through count (extras.decoders_of, by its format), and the parsers."""
        from ..extras import CODECS, DECODERS, decoders_of

        if not there or rec.sha256 is None:
            return  # a node like this one, a row the driver made (a cancelled task's), or bytes never read there
        if there not in self.nodes:
            self.nodes[there] = json.loads(there)
        mine, theirs = self.mine, self.nodes[there]

        def unlike(keys) -> str:
            return "; ".join(f"{k} {theirs.get(k)} there, {mine.get(k)} here" for k in sorted(keys)
                             if k in theirs and mine.get(k) != theirs.get(k))
        pixels = unlike(decoders_of(rec.format) or (*DECODERS, *CODECS))
        parsers = unlike(self.parsers)
        if not pixels and not parsers:
            return  # none that this file goes through (a PNG on a node without pillow-heif)
        self.pipe.stats.other_decoders += 1
        diff = f"{pixels}|{parsers}"
        if diff in self.said:
            return
        self.said.add(diff)
        why = "; ".join(
            ([f"a Ray node decodes with other decoder versions than this process ({pixels}): its pixels, and so its "
              "records, can differ from this machine's"] if pixels else []) +
            ([f"a Ray node reads metadata with other parser versions than this process ({parsers}): its metadata "
              "evidence (a C2PA manifest, EXIF), and so its records, can differ from this machine's"]
             if parsers else [])) + "; install the same versions on every node (docs/scale.md)"
        if self.pipe.prior is not None:
            raise RayJobFailed(f"{why}. The results store's run names this process's versions, so no record decoded "
                               "there is stored under it: the store keeps the records so far, and the same command "
                               "resumes once the nodes match")
        self.note(why)


def _send(ray, pipe, todo, chunk, first, stages, cpus, file_timeout, start, check=lambda there, rec: None
          ) -> Iterator[Record]:
    """The records of one window's files that go to the cluster (`todo`), lost files tried again alone.
    The results store's crashguard.CrashGuard (None without --db): its strikes say which files ended the
    process reading them; a worker that dies costs the driver nothing, so none is read "alone" here."""
    guard = pipe.guard
    returned: set[int] = set()
    for rec, i, there in _execute(ray, todo, _blocks(len(todo), pipe.batch_size, cpus), stages, pipe.batch_size):
        if _is_timeout(rec):
            continue  # its task ran out of time: which of its files did is learnt alone, below
        check(there, rec)
        returned.add(i)
        if guard is not None:
            guard.survived(chunk[i - first].path)
        pipe.count(rec)
        yield rec
    lost = [t for t in todo if t["i"] not in returned]
    if not lost:
        return
    if len(lost) > max(LOST_ALONE, len(todo) // 2):
        # Most of the window failed: the cluster (a lost node, a model that cannot build), not a file.
        after = ("the results store keeps the records so far and the same command resumes after them"
                 if pipe.prior is not None else "with --db a second run would resume after the records so far")
        raise RayJobFailed(f"Ray tasks failed for {len(lost)} of the {len(todo)} files of this window (see the "
                           f"Ray log above): the cluster is failing, not one file; {after}")
    # A file that kills its worker (a decoder crash, memory) or makes its task raise took its block's other
    # files with it: each is tried again alone, so only such a file is lost, as an error record.
    again: set[int] = set()
    late: dict[int, str] = {}
    for rec, i, there in _execute(ray, lost, len(lost), stages, 1):
        if _is_timeout(rec):
            late[i] = rec.error.message
            continue
        check(there, rec)
        again.add(i)
        if guard is not None:
            guard.survived(chunk[i - first].path)
        pipe.count(rec)
        yield rec
    for t in lost:
        if t["i"] in late:
            # Alone in its task and still past the deadline: the file, not its neighbours. As many strikes
            # as set it aside, so no later run of the store waits for it again.
            path = chunk[t["i"] - first].path
            kept = guard is not None and guard.died(path, STRIKES_TO_REFUSE)
            deadline = task_deadline(1, file_timeout or 0, start)
            rec = Record(file=path).set_error(TIMEOUT, _ran_out(deadline, file_timeout or 0, start, kept,
                                                                pipe.prior is not None,
                                                                model=late[t["i"]] == MODEL_LATE))
            yield from pipe.complete([Sample(index=t["i"], path=path, record=rec)])
        elif t["i"] not in again:
            # A task that raises returns error records (_decode_stage): a block lost with this file alone in
            # it, each of its tries, is a worker process that died reading it.
            path = chunk[t["i"] - first].path
            kept = guard is not None and guard.died(path, TASK_RETRIES + 1)
            rec = Record(file=path).set_error("crashed", _died_reading(kept, pipe.prior is not None))
            yield from pipe.complete([Sample(index=t["i"], path=path, record=rec)])


def _check_pool(nodes: list[dict], actors: int, actor_cpus: float, actor_gpus: float) -> None:
    """RayUnavailable when the actor pool cannot be placed on the cluster's nodes: Ray Data waits for its
    actors for ever (AIIDETECT_RAY_ACTOR_CPUS=64 or AIIDETECT_RAY_ACTORS=6 on a 2-CPU machine: no record,
    no exit)."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    if not alive:
        return  # nothing known to check against: Ray decides
    room = 0
    for res in alive:
        fit = [int(float(res.get(k, 0)) // need) for k, need in (("CPU", actor_cpus), ("GPU", actor_gpus)) if need > 0]
        room += min(fit) if fit else actors
    if actors > room:
        kinds = f"{actor_cpus:g} CPU" + (f" and {actor_gpus:g} GPU" if actor_gpus else "")
        nodes_have = ", ".join(f"{float(r.get('CPU', 0)):g} CPU" + (f" {float(r.get('GPU', 0)):g} GPU"
                                                                     if actor_gpus else "") for r in alive[:8])
        raise RayUnavailable(f"{actors} model actor(s) of {kinds} each do not fit on this Ray cluster (room for "
                             f"{room}; its nodes: {nodes_have}), and Ray would wait for them for ever: set "
                             "AIIDETECT_RAY_ACTORS and AIIDETECT_RAY_ACTOR_CPUS smaller, or leave them unset "
                             "(docs/scale.md)")


def _died_reading(kept: bool, stored: bool) -> str:
    then = ("not read again by this results store until the file changes: `touch` it to try it once more"
            if kept or stored else "a later scan reads it again (with --db it would be set aside)")
    return (f"the Ray worker process reading this file died each of the {TASK_RETRIES + 1} times it was tried "
            f"alone in its task (a crash in an image decoder, the out-of-memory killer; see the Ray log); {then}")


def _ran_out(deadline: float, file_timeout: float, start: float, kept: bool, stored: bool,
             model: bool = False) -> str:
    then = ("not read again by this results store until the file changes: `touch` it to try it once more"
            if kept or stored else "a later scan reads it again (with --db it would be set aside)")
    if model:
        return (f"the model's batch holding this file alone took more than {deadline:g} s ({start:g} s, then "
                f"{file_timeout:g} s for the file: --file-timeout), after its pixels were read: the model actor "
                "was killed and a new one started (a backbone stuck in native code, a stopped worker, a GPU that "
                f"hangs); {then}")
    return (f"reading this file took more than {deadline:g} s with no other file in its Ray task ({start:g} s for "
            f"the task to start, {file_timeout:g} s for the file: --file-timeout): the task was cancelled and its "
            "worker process killed (a decoder stuck on the file, a filesystem that does not answer, a stopped "
            f"worker); {then}")


def _log_warning(message: str) -> None:
    import logging

    logging.getLogger("aiidetect").warning(message)


def _is_timeout(rec: Record) -> bool:
    return rec.error is not None and rec.error.code == TIMEOUT


def _blocks(n: int, batch_size: int, cpus: float) -> int:
    return max(1, min(n // batch_size, 4 * int(cpus)))


def _execute(ray, items: list[dict], blocks: int, stages, batch_size: int) -> Iterator[tuple[Record, int, str]]:
    """(record, index, the decoding worker's versions_unlike or "") of the items whose blocks finished, in input
    order. A block whose task failed after its retries is left out (max_errored_blocks), not the end of the
    dataset: the caller sees which indices did not come back."""
    import warnings

    ds = ray.data.from_items(items, override_num_blocks=blocks)
    for fn, kw in stages:
        with warnings.catch_warnings():
            # Ray 2.60 names no parameter for max_retries / max_task_retries yet deprecates passing them as
            # remote args: a warning on every scan's stderr about our own call, with nothing to change to.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = ds.map_batches(fn, batch_size=batch_size, batch_format="numpy", **kw)
    for row in ds.iter_rows():
        yield pickle.loads(row["record"]), int(row["i"]), str(row.get("decoders") or "")
