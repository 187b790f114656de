"""Several processes: torchrun (gloo on CPU) and init_distributed_mode.

The torchrun tests start ``python -m torch.distributed.run --nproc_per_node=2`` on this very
file: run as a script, it is the per-rank worker (see ``_worker`` at the bottom), which
calls ``tv_training.cli`` and writes what each rank saw to ``RESULT_DIR/rank{N}.json``.
"""

import gc
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # the worker runs outside pytest, without pytest.ini's pythonpath
    sys.path.insert(0, ROOT)

# after the sys.path line above, which these imports need when this file runs as a script (the torchrun worker)
import tv_training  # noqa: E402
import utils  # noqa: E402
from finetune.data.loaders import split_indices  # noqa: E402
from finetune.data.synthetic import make_synthetic_pennfudan  # noqa: E402

# ---------------------------------------------------------------------------------------
# init_distributed_mode, without starting processes
# ---------------------------------------------------------------------------------------

LAUNCH_VARS = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
               "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NNODES"]


@pytest.fixture
def clean_launch_env(monkeypatch):
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    calls = []
    monkeypatch.setattr(utils.dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setattr(utils.dist, "barrier", lambda *a, **kw: None)
    monkeypatch.setattr(utils, "setup_for_distributed", lambda is_master: calls.append(("master", is_master)))
    return calls


def _args(device="cpu"):
    return tv_training.get_args_parser().parse_args(["--device", device])


def test_plain_python_is_not_distributed(clean_launch_env, capsys):
    args = _args()
    utils.init_distributed_mode(args)
    assert args.distributed is False and args.gpu is None
    assert clean_launch_env == [] and not utils.dist.is_initialized()
    assert capsys.readouterr().out == "Not using distributed mode\n"


def test_one_task_slurm_job_is_not_distributed(clean_launch_env, monkeypatch):
    """`python train.py` inside a one-task SLURM allocation: SLURM_PROCID is set, but no srun group."""
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    args = _args()
    utils.init_distributed_mode(args)
    assert args.distributed is False
    assert clean_launch_env == []


def test_torchrun_environment_on_cpu_uses_gloo(clean_launch_env, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    args = _args()
    utils.init_distributed_mode(args)
    assert (args.distributed, args.rank, args.world_size, args.gpu, args.dist_backend) == (True, 1, 2, None, "gloo")
    assert clean_launch_env == [dict(backend="gloo", init_method="env://", world_size=2, rank=1), ("master", False)]


def test_srun_environment_defaults_the_rendezvous_address(clean_launch_env, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    args = _args()
    utils.init_distributed_mode(args)
    assert (args.rank, args.world_size, args.dist_backend) == (0, 4, "gloo")
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("127.0.0.1", "29500")
    assert clean_launch_env[-1] == ("master", True)


def test_multi_node_srun_needs_master_addr(clean_launch_env, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_NNODES", "2")
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        utils.init_distributed_mode(_args())
    monkeypatch.setenv("MASTER_ADDR", "node01")
    args = _args()
    utils.init_distributed_mode(args)
    assert args.rank == 3 and os.environ["MASTER_ADDR"] == "node01"


# (setup_for_distributed is tested in tests/test_utils.py)


# ---------------------------------------------------------------------------------------
# torchrun --nproc_per_node=2 on CPU: train (evaluating on both ranks), then evaluate in 1 process
# ---------------------------------------------------------------------------------------

TIMEOUT_S = 600
# the demo's small model: the process-group code paths are the model's business in no way, and it
# halves the time of the launch
COMMON = ["--model", "maskrcnn_resnet18", "--weights", "none", "--min-size", "64", "--max-size", "96", "-b", "2",
          "-j", "0", "--test-size", "5", "--device", "cpu", "--print-freq", "1"]


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith(("SLURM_", "TORCHELASTIC"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    return env


def _launch(result_dir, argv, nproc):
    """Run the worker (this file) under torchrun with ``nproc`` processes; return the rank records."""
    os.makedirs(result_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", os.path.abspath(__file__), str(result_dir),
           *argv]
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    log = f"$ {' '.join(cmd)}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, log
    records = []
    for rank in range(nproc):
        with open(os.path.join(result_dir, f"rank{rank}.json")) as f:
            records.append(json.load(f))
    return dict(records=records, stdout=proc.stdout, stderr=proc.stderr, log=log, seconds=time.time() - start)


@pytest.fixture(scope="module")
def torchrun_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    data = str(base / "data")
    make_synthetic_pennfudan(data, num_images=10, seed=0, height_range=(64, 80), width_range=(48, 96))
    out = str(base / "out")
    common = ["--data-path", data, *COMMON]
    train = _launch(base / "train", [*common, "--epochs", "1", "--opt", "adamw", "--lr", "1e-4",
                                     "--aspect-ratio-group-factor", "0", "--output-dir", out], nproc=2)
    # the training run's last evaluation ran on both ranks; one process evaluates the checkpoint
    # rank 0 saved, here in pytest's process with one thread, as each torchrun worker had
    test_args = [*common, "--test-only", "--resume", os.path.join(out, "checkpoint.pth"), "--output-dir", ""]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = dict(records=[_record(test_args)])
    finally:
        torch.set_num_threads(threads)
    return dict(train=train, two=train, one=one, out=out, data=data)  # "two": the training run's evaluation


@pytest.mark.slow  # torchrun_runs: a torchrun launch (pytest.ini)
def test_torchrun_training_on_cpu(torchrun_runs):
    train = torchrun_runs["train"]
    r0, r1 = train["records"]
    assert (r0["world_size"], r1["world_size"]) == (2, 2)
    assert (r0["backend"], r1["backend"]) == ("gloo", "gloo")
    # one log, from rank 0 (the others are silent) ...
    assert train["stdout"].count("Start training") == 1
    assert "Count of instances per bin" in train["stdout"]  # --aspect-ratio-group-factor 0
    # ... whose training losses are averaged over the ranks (reduce_dict): both ranks agree
    assert r0["train"] == r1["train"] and r0["train"]["loss"] > 0
    # the per-epoch evaluation is merged across ranks: both hold the same 24 numbers
    assert r0["metrics"] == r1["metrics"]
    # rank 0 wrote the outputs
    out = torchrun_runs["out"]
    for name in ("checkpoint.pth", "metrics.json", "curves.png", "preview.png"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert os.listdir(os.path.join(out, "predictions"))
    with open(os.path.join(out, "metrics.json")) as f:
        assert len(json.load(f)) == 1
    # the process group was torn down, after the DDP wrappers were freed: no leftover-group warning at exit
    assert "destroy_process_group" not in train["stderr"] and "NOT been destroyed" not in train["stderr"]
    assert (r0["ddp_left"], r1["ddp_left"]) == (0, 0)


@pytest.mark.slow  # torchrun_runs: a torchrun launch (pytest.ini)
def test_two_process_evaluation_equals_one_process(torchrun_runs):
    two, one = torchrun_runs["two"]["records"], torchrun_runs["one"]["records"]
    assert (two[0]["world_size"], one[0]["world_size"]) == (2, 1)
    single = one[0]["metrics"]
    assert set(single) == {"bbox", "segm"} and all(len(v) == 12 for v in single.values())
    assert two[0]["metrics"] == single  # exactly the same 24 COCO numbers
    assert two[1]["metrics"] == single
    # and the same detections (scores, matches) for every image, also where AP is still 0
    assert two[0]["per_image"] == one[0]["per_image"]
    assert sum(len(entry[2]) for entry in one[0]["per_image"]["segm"]) > 0


@pytest.mark.slow  # torchrun_runs: a torchrun launch (pytest.ini)
def test_each_test_image_is_scored_exactly_once(torchrun_runs):
    _, test_ids = split_indices(10, 5, None, 0)
    r0, r1 = torchrun_runs["two"]["records"]
    assert r0["gt_img_ids"] == sorted(test_ids)
    # DistributedSampler pads 5 images to 3 + 3: one image is run on both ranks ...
    assert len(r0["local_img_ids"]) == len(r1["local_img_ids"]) == 3
    assert sorted(set(r0["local_img_ids"]) | set(r1["local_img_ids"])) == sorted(test_ids)
    # ... but the merged evaluation holds each test image once
    for rec in (r0, r1, torchrun_runs["one"]["records"][0]):
        for iou in ("bbox", "segm"):
            assert rec["merged_img_ids"][iou] == sorted(test_ids)
            assert rec["num_eval_imgs"][iou] == rec["num_cats_x_areas"][iou] * len(test_ids)


# ---------------------------------------------------------------------------------------
# The per-rank worker (run by torchrun, not collected by pytest)
# ---------------------------------------------------------------------------------------


def _record(argv):
    """Run ``tv_training.cli(argv)``; return what this rank's last evaluation merged."""

    seen = {}
    real_evaluate = tv_training.evaluate

    def spy(*args, **kwargs):
        evaluator = real_evaluate(*args, **kwargs)
        seen["evaluator"] = evaluator
        seen["world_size"] = utils.get_world_size()
        seen["backend"] = torch.distributed.get_backend() if utils.is_dist_avail_and_initialized() else None
        return evaluator

    tv_training.evaluate = spy
    try:
        result = tv_training.cli(argv)
    finally:
        tv_training.evaluate = real_evaluate
    ev = seen["evaluator"]
    record = dict(
        world_size=seen["world_size"],
        backend=seen["backend"],
        metrics={iou: result[iou] for iou in ("bbox", "segm")},
        train=result.get("train"),
        gt_img_ids=sorted(int(i) for i in ev.coco_gt.getImgIds()),
        local_img_ids=[int(i) for i in ev.img_ids],
        merged_img_ids={iou: [int(i) for i in e.params.imgIds] for iou, e in ev.coco_eval.items()},
        num_eval_imgs={iou: len(e.evalImgs) for iou, e in ev.coco_eval.items()},
        num_cats_x_areas={iou: len(e.params.catIds) * len(e.params.areaRng) for iou, e in ev.coco_eval.items()},
        # per merged (category, area range, image) entry: its detections' scores and matches
        per_image={iou: [[int(x["image_id"]), [float(a) for a in x["aRng"]], [float(v) for v in x["dtScores"]],
                          [[float(v) for v in row] for row in x["dtMatches"]]]
                         for x in e.evalImgs if x is not None] for iou, e in ev.coco_eval.items()},
        process_group_left=utils.is_dist_avail_and_initialized(),
        # DDP wrappers still alive once cli() returned (their reducers would go at interpreter exit)
        ddp_left=sum(type(o) is torch.nn.parallel.DistributedDataParallel for o in gc.get_objects()),
    )
    assert not record["process_group_left"], "cli() should destroy the process group"
    return record


def _worker(result_dir, argv):
    """The torchrun worker: write this rank's record to ``result_dir/rank{N}.json``."""
    record = _record(argv)
    rank = int(os.environ.get("RANK", 0))
    with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2:])
