"""The tutorial's own training run with torchvision's stock behaviour, as a command line.

``tv_training.py`` against this script, on the same data, weights, split and flags, is the
tutorial's whole run timed from the command line against the reference: the tutorial's main loop
(SGD, StepLR, ``train_one_epoch`` then ``evaluate`` each epoch) over stock torchvision modules
(none of ``finetune/speedups/``), the tutorial's DataLoaders (4 workers, rebuilt each epoch) and
torchvision's evaluation (one thread, COCO ground truth rebuilt per evaluation), as
``benchmarks/bench.py``'s "reference" configuration does phase by phase::

    python benchmarks/tutorial_reference.py --data-path data/PennFudanPed --weights layout.pth --lr 1e-4
    python tv_training.py                   --data-path data/PennFudanPed --weights layout.pth --lr 1e-4

A state dict or checkpoint (``--weights FILE``), random init (``none``) or the COCO weights (the
default, downloaded) start it; a Penn-Fudan-style folder is the data. It prints the tutorial's log
lines and COCO tables, then the wall time of the whole run and the final bbox/segm AP.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))


def get_args_parser():
    parser = argparse.ArgumentParser(description="The tutorial's run with torchvision's stock behaviour "
                                     "(see the module docstring).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-path", default=os.path.join(ROOT, "data", "PennFudanPed"),
                        help="Penn-Fudan-style folder (PNGImages/, PedMasks/)")
    parser.add_argument("--weights", default="DEFAULT",
                        help="DEFAULT (COCO weights, downloaded), none (random init), or a state dict or "
                             "checkpoint of the tutorial's model")
    parser.add_argument("--epochs", type=int, default=2, help="epochs (the tutorial's 2)")
    parser.add_argument("--lr", type=float, default=0.005, help="SGD learning rate (the tutorial's 0.005)")
    parser.add_argument("--test-size", type=int, default=50, help="test images (the tutorial's last 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split: tv_training.py's --seed")
    parser.add_argument("--min-size", type=int, default=800, help="model input size (torchvision's 800)")
    parser.add_argument("--max-size", type=int, default=1333, help="model input size (torchvision's 1333)")
    parser.add_argument("--print-freq", type=int, default=10, help="a log line every N iterations")
    return parser


def main(args):
    import torch
    from bench_phases import TUTORIAL_WORKERS, reference_evaluate

    import engine
    import tv_training
    import utils
    from finetune.data.loaders import split_indices
    from finetune.errors import TutorialError
    from finetune.models import pretrained

    device = torch.device("cpu") if not torch.cuda.is_available() else torch.device("cuda")
    start = time.time()
    # The model (and its weights file) first: a foreign file fails before any data is read.
    random_init = args.weights.lower() == "none"
    state = None
    if args.weights != "DEFAULT" and not random_init:
        state = pretrained.load_weights_file(args.weights)["model"]  # its errors name the file and the fix
    layout = "layout" if state is not None else None if random_init else "DEFAULT"
    model = pretrained.build_detector(tv_training.get_model_instance_segmentation, "maskrcnn", 2, layout,
                                         min_size=args.min_size, max_size=args.max_size)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as e:  # the first line names only the class: show the first mismatch
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            raise TutorialError(f"{args.weights} is not a state dict of the tutorial's Mask R-CNN with 2 classes "
                                f"({lines[min(1, len(lines) - 1)][:200]}); pass such a file, DEFAULT or none"
                                ) from None
    model.to(device)
    dataset = tv_training.PennFudanDataset(args.data_path, tv_training.get_transform(train=True))
    dataset_test = tv_training.PennFudanDataset(args.data_path, tv_training.get_transform(train=False))
    train_idx, test_idx = split_indices(len(dataset), args.test_size, None, args.seed)  # tv_training's split
    dataset = torch.utils.data.Subset(dataset, train_idx)
    dataset_test = torch.utils.data.Subset(dataset_test, test_idx)
    data_loader = torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=True, num_workers=TUTORIAL_WORKERS,
                                              collate_fn=utils.collate_fn)
    data_loader_test = torch.utils.data.DataLoader(dataset_test, batch_size=1, shuffle=False,
                                                   num_workers=TUTORIAL_WORKERS, collate_fn=utils.collate_fn)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=0.0005)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1)
    evaluator = None
    for epoch in range(args.epochs):
        engine.train_one_epoch(model, optimizer, data_loader, device, epoch, print_freq=args.print_freq)
        lr_scheduler.step()
        evaluator = reference_evaluate(model, data_loader_test, device)
    seconds = time.time() - start
    ap = {t: float(evaluator.coco_eval[t].stats[0]) for t in ("bbox", "segm")} if evaluator else {}
    print(f"That's it! The whole run took {seconds:.0f} s" +
          (f"; bbox AP {ap['bbox']:.4f}, segm AP {ap['segm']:.4f}" if ap else ""))
    return dict(seconds=seconds, ap=ap)


def cli(argv=None):
    sys.path[:0] = [p for p in (ROOT, HERE) if p not in sys.path]
    from finetune.errors import TutorialError

    args = get_args_parser().parse_args(argv)
    if args.epochs < 1 or args.test_size < 1 or args.lr <= 0:
        print("error: --epochs and --test-size must be at least 1 and --lr above 0", file=sys.stderr)
        sys.exit(2)
    if not os.path.isdir(os.path.join(args.data_path, "PNGImages")):
        print(f"error: {args.data_path} holds no Penn-Fudan folder (PNGImages/, PedMasks/); this script does not "
              "download: run tv_training.py once without --data-path, or pass a folder it made", file=sys.stderr)
        sys.exit(1)
    try:
        return main(args)
    except TutorialError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
