"""The worker processes of benchmarks/bench.py and how the parent drives them.

Each (phase, configuration) runs in a process of its own (``WorkerProcess``: ``bench.py --worker
CONFIG SPEC``, its log in ``--out``), so peak RSS and the OpenMP runtime's start-up state are per
configuration; the parent sends one JSON command per line on the worker's stdin and reads one
JSON reply per line from its stdout (``worker_main`` answers with bench_phases.Worker).
``run_phase`` sets every configuration up, then interleaves the repeats (A B, B A, A B, ...) so
that a change in the machine's load hits both alike; ``run_compile_phase`` does the same for
(d), eager against compiled, both "ours". Ctrl-C reaches the workers too (same process group);
the ``finally`` clauses stop every worker that is left.
"""

import json
import os
import subprocess
import sys
import traceback

from bench_phases import Worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the only entry point: its hidden --worker and --photo-worker modes run a worker process
BENCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench.py")


def import_project(config):
    """Import torch and the project; returns the OMP_WAIT_POLICY the OpenMP runtime started with.

    Every configuration starts with the runtime's stock wait policy (the reference's worker drops
    the variable; ours keeps the parent's, as ``python tv_training.py`` does).
    """
    sys.path.insert(0, ROOT)
    policy = os.environ.get("OMP_WAIT_POLICY", "(unset: runtime default)")
    import torch  # noqa: F401

    import tv_training  # noqa: F401
    return policy


def keep_freed_memory():
    """glibc malloc: serve big blocks from the heap instead of fresh mmaps, and never trim it.

    By default each big tensor PyTorch frees on the CPU goes back to the kernel, and the next one
    faults in new zero-filled pages (about 1.4 million minor faults per 800-px training step here).
    With this, freed pages stay resident and later tensors reuse them where they fit; the price is
    heap fragmentation, i.e. a higher peak RSS. Affects the allocations made after it (the worker
    calls it before importing torch). The same as MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError as e:
        raise RuntimeError(f"ours_malloc needs glibc (libc.so.6): {e}") from e
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameter numbers from glibc's malloc.h
    if not (libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2 ** 31 - 1)):
        raise RuntimeError("ours_malloc: glibc mallopt refused M_MMAP_MAX / M_TRIM_THRESHOLD")


def worker_main(config, spec_path):
    """``bench.py --worker CONFIG SPEC``: answer the parent's commands until it sends "quit"."""
    # The protocol uses the original stdout; everything the project prints goes to stderr (the log).
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    if config == "ours_malloc":
        keep_freed_memory()
    omp_wait_policy = import_project(config)
    with open(spec_path) as f:
        spec = json.load(f)
    worker = Worker(config, spec, omp_wait_policy)
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            proto.write(json.dumps({"ok": True, "result": None}) + "\n")
            break
        print(f"[{config}] {msg['cmd']}", flush=True)
        try:
            reply = {"ok": True, "result": getattr(worker, "cmd_" + msg["cmd"])(**msg.get("args", {}))}
        except Exception:  # reported to the parent, which stops the run
            reply = {"ok": False, "error": traceback.format_exc()}
        proto.write(json.dumps(reply) + "\n")


def worker_env(config):
    """The environment a configuration's worker process starts with."""
    env = dict(os.environ)
    if config == "reference":
        env.pop("OMP_WAIT_POLICY", None)  # the stock OpenMP behaviour
    if config == "ours_thp":  # glibc reads its tunables at start-up only
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), "glibc.malloc.hugetlb=1"]))
    return env


class WorkerProcess:
    """The parent's handle on one worker process: ``call`` sends a command and returns its result."""

    def __init__(self, config, spec_path, log_path):
        env = worker_env(config)
        self.config = config
        self.log = open(log_path, "a")
        self.proc = subprocess.Popen([sys.executable, BENCH_SCRIPT, "--worker", config, spec_path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env, cwd=ROOT)

    def call(self, cmd, **args):
        self.proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.config} worker died during {cmd}; see {self.log.name}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(f"{self.config} worker failed in {cmd}:\n{reply['error']}")
        return reply["result"]

    def ask_to_quit(self):
        try:
            self.call("quit")
        except Exception:  # a dead worker cannot answer: stop it
            self.proc.kill()

    def wait(self):
        try:
            self.proc.wait(timeout=120)
        finally:
            self.log.close()


def interleaved(configs, repeats):
    """A B, B A, A B, ...: each round alternates which configuration goes first."""
    for r in range(repeats):
        yield r, (configs if r % 2 == 0 else configs[::-1])


def close_all(procs):
    """Ask every worker process to quit (killing the ones that cannot answer), then wait for all of
    them: they tear down side by side (a worker's exit takes up to a second)."""
    for p in procs.values():
        p.ask_to_quit()
    for p in procs.values():
        p.wait()


def run_phase(phase, configs, repeats, spec_path, out_dir, extra=None, count_flops=False, profile=False,
              procs=None):
    """Start one worker per configuration, set both up, interleave the repeats, collect memory.

    ``procs``: running workers to use instead (one per configuration, left running)."""
    fresh = procs is None
    if fresh:
        procs = {c: WorkerProcess(c, spec_path, os.path.join(out_dir, f"{phase}_{c}.log")) for c in configs}
    result = {c: dict(runs=[]) for c in configs}
    try:
        for c in configs:
            print(f"  [{phase}] setting up {c} ...", flush=True)
            result[c]["setup"] = procs[c].call(f"setup_{phase}")
        if extra == "peak":
            for c in configs:
                result[c]["peak"] = procs[c].call("peak")
        for r, order in interleaved(configs, repeats):
            for c in order:
                load = os.getloadavg()[0]
                run = procs[c].call(phase, **({"capture": True} if phase == "eval" and r == repeats - 1 else {}))
                run["loadavg_1min_before"] = load
                result[c]["runs"].append(run)
                print(f"  [{phase}] repeat {r + 1}/{repeats} {c}: {run.get('seconds', float('nan')):.2f} s"
                      + (f"  ({run['error']})" if "error" in run else ""), flush=True)
        for c in configs:
            result[c]["memory"] = procs[c].call("memory")  # before the FLOP count, which adds its own
        if phase == "demo":
            for c in configs:
                result[c]["convs"] = procs[c].call("demo_convs")
        if profile:
            for c in configs[1:]:
                print(f"  [{phase}] profiling one step ({c}) ...", flush=True)
                result[c]["profile"] = procs[c].call("profile")
        if count_flops:
            flop_config = "ours" if "ours" in configs else configs[-1]
            print(f"  [{phase}] counting FLOPs ({flop_config}) ...", flush=True)
            result["flops"] = procs[flop_config].call("flops")
    finally:
        if fresh:
            close_all(procs)
    return result


def run_compile_phase(steps, spec_path, out_dir):
    """(d) ours eager vs ours + torch.compile, fresh processes, steps alternating between them."""
    variants = ("eager", "compiled")
    procs = {v: WorkerProcess("ours", spec_path, os.path.join(out_dir, f"compile_{v}.log")) for v in variants}
    result = {v: dict(runs=[]) for v in variants}
    try:
        for v in variants:
            print(f"  [compile] setting up {v} ...", flush=True)
            result[v]["setup"] = procs[v].call("setup_compile", compiled=v == "compiled")
        for i, order in interleaved(list(variants), steps):
            for v in order:
                run = procs[v].call("compile_step", i=i)
                result[v]["runs"].append(run)
                print(f"  [compile] step {i + 1}/{steps} {v}: {run['seconds']:.2f} s", flush=True)
        for v in variants:
            result[v]["memory"] = procs[v].call("memory")
    finally:
        close_all(procs)
    return result
