"""The results of benchmarks/bench.py: summaries, the printed report and the files in ``--out``.

``median_seconds``, ``paired_ratio`` and ``fmt_ratio`` make the table's medians and ratios;
``agreement`` scores one configuration's detections against the reference's; ``compile_summary``
answers (d) "does torch.compile pay?"; ``machine_info`` names the machine; ``report`` is the
text printed and saved; ``write_results`` writes bench.json and bench.txt; ``keep_earlier_run``
moves an earlier run's files to ``--out``/earlier/<its time>/ first.
"""

import json
import os
import platform
import statistics
import time

PHASES = ("step", "eval", "epoch")  # the table; (d) compile, (e) photo and (f) demo report on their own
TUTORIAL_STEPS_PER_EPOCH = 60  # the tutorial: 170 images, 50 held out, 120 to train on in batches of 2


def _most_confident(reference, top_k):
    """``(image, detection)`` indices of the reference's ``top_k`` x images most confident detections."""
    # one score threshold for all images (top_k per image on average): every kept detection then
    # ranks above every dropped one, so the reference against itself gives a precision of 1
    ranked = sorted(((-score, i, j) for i, det in enumerate(reference) for j, score in enumerate(det["scores"])))
    return {(i, j) for _, i, j in ranked[: top_k * len(reference)]}


def _reference_truth(reference, chosen, iou):
    """COCO images and ground-truth annotations (``iou``: bbox or segm) of the chosen reference detections."""
    from pycocotools import mask as coco_mask

    images, anns = [], []
    for i, det in enumerate(reference):
        height, width = det.get("size", [0, 0])
        images.append(dict(id=det["image_id"], height=height, width=width))
        for j in (j for j in range(len(det["scores"])) if (i, j) in chosen):
            x0, y0, x1, y1 = det["boxes"][j]
            ann = dict(id=len(anns) + 1, image_id=det["image_id"], category_id=det["labels"][j], iscrowd=0,
                       bbox=[x0, y0, x1 - x0, y1 - y0], area=(x1 - x0) * (y1 - y0))
            if iou == "segm":
                if "masks" not in det:
                    break
                ann["segmentation"] = det["masks"][j]
                ann["area"] = float(coco_mask.area(det["masks"][j]))
            if ann["area"] >= 1:
                anns.append(ann)
    return images, anns


def _detection_results(other, iou):
    """``other``'s detections as COCO results: boxes for bbox, masks (where it has them) for segm."""
    results = []
    for det in other:
        for j, score in enumerate(det["scores"]):
            res = dict(image_id=det["image_id"], category_id=det["labels"][j], score=score)
            if iou == "bbox":
                x0, y0, x1, y1 = det["boxes"][j]
                res["bbox"] = [x0, y0, x1 - x0, y1 - y0]
            elif "masks" in det:
                res["segmentation"] = det["masks"][j]
            else:
                continue
            results.append(res)
    return results


def _coco_ap(images, anns, results, iou):
    """COCOeval's AP (``iou``: bbox or segm) of ``results`` against the ground truth ``images`` and ``anns``."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = dict(images=images, annotations=anns,
                      categories=[dict(id=c) for c in sorted({a["category_id"] for a in anns})])
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iou)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def agreement(reference, other, top_k=20):
    """COCO AP of ``other``'s detections scored against the reference's own most confident ones.

    With random initial weights the true AP is ~0 for both configurations, which would hide any
    change; taking the reference's confident detections as ground truth makes the comparison
    sharp: the reference scored against itself gives ~1.000 (degenerate boxes and empty masks
    are left out of the ground truth, ties in score can cost a little), and a configuration
    with other detections scores lower.
    """
    chosen = _most_confident(reference, top_k)
    out = {}
    for iou in ("bbox", "segm"):
        images, anns = _reference_truth(reference, chosen, iou)
        results = _detection_results(other, iou)
        if not results or not anns:
            continue
        out[iou] = _coco_ap(images, anns, results, iou)
    return out


def compile_summary(result, tutorial_steps=2 * TUTORIAL_STEPS_PER_EPOCH):
    """Totals, steady-state step times (median of the second half) and the break-even step count."""
    out = {}
    for v in ("eager", "compiled"):
        secs = [r["seconds"] for r in result[v]["runs"]]
        out[v] = dict(total=sum(secs), first=secs[0], steady=statistics.median(secs[len(secs) // 2:]),
                      slowest=max(secs))
    n = len(result["eager"]["runs"])
    saving = out["eager"]["steady"] - out["compiled"]["steady"]
    overhead = out["compiled"]["total"] - out["eager"]["total"]
    if overhead <= 0:
        break_even = n
    elif saving > 0:
        break_even = n + overhead / saving
    else:
        break_even = float("inf")
    losses = [(a["loss"], b["loss"]) for a, b in zip(result["eager"]["runs"], result["compiled"]["runs"])]
    rel = max((abs(a - b) / max(abs(a), 1e-12) for a, b in losses[:3]), default=float("nan"))
    return dict(out, steps=n, saving_per_step=saving, overhead=overhead, break_even_steps=break_even,
                tutorial_steps=tutorial_steps, pays=break_even <= tutorial_steps, first_losses_max_rel_diff=rel)


def paired_ratio(reference_runs, other_runs):
    """Median over repeats of reference time / other time; repeat i is the same batch in both."""
    return statistics.median(a["seconds"] / b["seconds"] for a, b in zip(reference_runs, other_runs)
                             if "seconds" in a and "seconds" in b)


def median_seconds(runs):
    """The median of the runs' times (NaN where none has one: every run failed)."""
    values = [r["seconds"] for r in runs if "seconds" in r]
    return statistics.median(values) if values else float("nan")


def machine_info():
    """Python, cores, platform, the CPU's model and bf16/AMX flags, and the load average now.
    Needs the project on sys.path (finetune.hardware reads /proc/cpuinfo)."""
    from finetune.hardware import read_cpuinfo

    info = dict(python=platform.python_version(), cores=os.cpu_count(), platform=platform.platform())
    try:
        name, flags = read_cpuinfo()
        info["cpu"] = "?" if name is None else name
        info["bf16_flags"] = sorted(f for f in flags or [] if "bf16" in f or f.startswith("amx"))
    except OSError:
        info["cpu"] = platform.processor()
    info["loadavg_start"] = os.getloadavg()
    return info


def keep_earlier_run(out_dir):
    """Move an earlier run's results in ``out_dir`` (bench.json, bench.txt, the logs, the photo
    outputs) to ``out_dir/earlier/<that run's time>/``, so a new run replaces nothing (the logs of
    a run that failed or was stopped included); returns that folder, or None when there was none."""
    kept = [n for n in os.listdir(out_dir)
            if n in ("bench.json", "bench.txt", "photo_ours", "photo_reference") or n.endswith(".log")]
    if not kept:
        return None
    last = max(os.path.getmtime(os.path.join(out_dir, n)) for n in kept)
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.localtime(last))
    dest, n = os.path.join(out_dir, "earlier", stamp), 1
    while os.path.exists(dest):
        n += 1
        dest = os.path.join(out_dir, "earlier", f"{stamp}-{n}")
    os.makedirs(dest)
    for name in kept:
        os.replace(os.path.join(out_dir, name), os.path.join(dest, name))
    return dest


def write_results(out_dir, cmd, args, info, results, text):
    """``out_dir``/bench.json (the command, the flags, the machine and every measurement) and
    bench.txt (the command and the printed report), each written atomically."""
    from finetune.outputs import writing

    writing.write_json_atomic(dict(command=cmd, args=vars(args), machine=info, results=results),
                              os.path.join(out_dir, "bench.json"))
    writing.write_text_atomic(f"$ {cmd}\n{text}\n", os.path.join(out_dir, "bench.txt"))


def fmt_ratio(ref, ours):
    """``ref / ours`` as "1.23x", or "n/a" where either is missing (NaN) or ours is 0."""
    return f"{ref / ours:.2f}x" if ours and ours == ours and ref == ref else "n/a"


def _machine_lines(args, info):
    """The report's opening: the machine, the load average and any --model-kwargs."""
    lines = [""]
    lines.append(f"Machine: {info['cpu']}, {info['cores']} cores, torch {info.get('torch', '?')}, device "
                 f"{args.device}; bf16 CPU flags: {', '.join(info['bf16_flags']) or 'none'}")
    lines.append(f"Load average at start {info['loadavg_start'][0]:.2f}, at end {info['loadavg_end'][0]:.2f} "
                 f"(other processes share the cores: compare the ratios, measured side by side)")
    if args.model_kwargs:  # (a)-(d) on a model other than torchvision's stock one
        lines.append(f"Mask R-CNN settings of (a)-(d): {json.dumps(args.model_kwargs)} (--model-kwargs)")
    lines.append("")
    return lines


def _epoch_part_rows(results, configs):
    """The (c) rows of its training and evaluation parts (which part holds the ratio back)."""
    ref, others = configs[0], configs[1:]
    lines = []
    for part in ("train", "eval"):
        runs = {c: [r for r in results["epoch"][c]["runs"] if f"{part}_seconds" in r] for c in configs}
        if all(runs.values()):
            part_med = {c: statistics.median(r[f"{part}_seconds"] for r in runs[c]) for c in configs}
            label = "    of which training" if part == "train" else "    of which evaluation"
            lines.append(f"{label:44s}" + "".join(f"{part_med[c]:16.2f}" for c in configs)
                         + "".join(f"{fmt_ratio(part_med[ref], part_med[c]):>16s}" for c in others))
    return lines


def _time_table(args, results, configs):
    """The (a)-(c) table: each configuration's median seconds per phase, and the reference's ratios to it."""
    ref, others = configs[0], configs[1:]
    header = (f"{'phase':44s}" + "".join(f"{c:>16s}" for c in configs)
              + "".join(f"{'ref/' + c:>16s}" for c in others))
    lines = [header, "-" * len(header)]
    names = dict(step=f"(a) train step, {args.min_size}/{args.max_size} px, batch {args.batch_size} [s]",
                 eval=f"(b) eval pass, {args.eval_images} images, {args.min_size} px [s]",
                 epoch=f"(c) epoch {args.epoch_train}+{args.epoch_test} images, {args.epoch_min_size} px [s]")
    for phase in PHASES:
        if phase not in results:
            continue
        med = {c: median_seconds(results[phase][c]["runs"]) for c in configs}
        lines.append(f"{names[phase]:44s}" + "".join(f"{med[c]:16.2f}" for c in configs)
                     + "".join(f"{fmt_ratio(med[ref], med[c]):>16s}" for c in others))
        if phase == "step" and len(results[phase][ref]["runs"]) > 1:
            # each repeat is a different batch (sizes differ): also pair the repeats batch by batch
            paired = {c: paired_ratio(results[phase][ref]["runs"], results[phase][c]["runs"]) for c in others}
            lines.append(f"{'    the same, median of per-batch ratios':44s}" + " " * 16 * len(configs)
                         + "".join(f"{paired[c]:>15.2f}x" for c in others))
        if phase == "epoch":
            lines += _epoch_part_rows(results, configs)
    return lines


def _memory_lines(args, results, configs):
    """Each (a)-(c) phase's peak RSS per configuration, and (a)'s minor page faults per step."""
    lines = ["", "Peak RSS of the worker process [MiB] (DataLoader workers' largest in brackets)"
             + ("; --reuse-workers: each covers the phases before it too" if args.reuse_workers else "")]
    for phase in PHASES:
        if phase in results:
            cells = []
            for c in configs:
                m = results[phase][c]["memory"]
                cell = f"{m['peak_rss_mib']:.0f} ({m['children_peak_rss_mib']:.0f})"
                if "cuda_max_allocated_mib" in m:
                    cell += f" cuda {m['cuda_max_allocated_mib']:.0f}"
                cells.append(f"{cell:>20s}")
            lines.append(f"  {phase:8s}" + "".join(cells))
    if "step" in results:
        faults = [statistics.median(r["minor_page_faults"] for r in results["step"][c]["runs"]) for c in configs]
        lines.append("Minor page faults per (a) step, median: "
                     + ", ".join(f"{c} {f:,.0f}" for c, f in zip(configs, faults)))
    return lines


def _flops_lines(results, configs):
    """(a)'s FLOPs per batch and each configuration's FLOP rate beside the peaks measured in its worker."""
    if not ("step" in results and results["step"].get("flops")):
        return []
    flops = results["step"]["flops"]
    lines = ["", "Training step FLOPs (forward + backward, FlopCounterMode, per timed batch): "
             + ", ".join(f"{f / 1e12:.2f} T" for f in flops)]
    for c in configs:
        runs = results["step"][c]["runs"]
        achieved = sum(flops[: len(runs)]) / sum(r["seconds"] for r in runs[: len(flops)])
        peak = results["step"][c].get("peak", {})
        conv = peak.get("conv", {})
        lines.append(f"  {c:10s} achieved {achieved / 1e9:7.1f} GFLOP/s | same process: sgemm "
                     f"{peak.get('sgemm', 0) / 1e9:6.1f}, conv3x3 nchw {conv.get('nchw', 0) / 1e9:6.1f}, "
                     f"channels_last {conv.get('channels_last', 0) / 1e9:6.1f} GFLOP/s")
    return lines


def _coco_lines(results, configs):
    """The COCO AP after (b) and (c) per configuration, and (b)'s agreement with the reference."""
    lines = []
    for phase in ("eval", "epoch"):
        if phase not in results:
            continue
        lines += ["", f"COCO AP after ({'b' if phase == 'eval' else 'c'}) {phase} (same initial weights):"]
        for c in configs:
            runs = [r for r in results[phase][c]["runs"] if "coco" in r]
            if not runs:
                lines.append(f"  {c:10s} no result ({results[phase][c]['runs'][-1].get('error', '?')})")
                continue
            coco = runs[-1]["coco"]
            extra = ""
            if phase == "epoch":
                extra = "  losses " + " ".join(f"{x:.4f}" for x in runs[-1]["losses"])
            lines.append(f"  {c:10s} bbox AP {coco['bbox']['AP']:.4f} AP50 {coco['bbox']['AP50']:.4f} | "
                         f"segm AP {coco['segm']['AP']:.4f} AP50 {coco['segm']['AP50']:.4f}{extra}")
        if phase == "eval" and results[phase].get("agreement"):
            lines.append("  agreement: AP against the reference's own 20 x images most confident detections as "
                         "ground truth (the reference itself: ~1.000)")
            for c, ap in results[phase]["agreement"].items():
                lines.append(f"  {c:10s} bbox AP {ap.get('bbox', float('nan')):.4f} | "
                             f"segm AP {ap.get('segm', float('nan')):.4f}")
    return lines


def _profile_lines(args, results, configs):
    """The profile table of one (a) step of each configuration but the reference (--profile)."""
    lines = []
    for c in configs[1:]:
        prof = results.get("step", {}).get(c, {}).get("profile")
        if prof:
            what = "GPU busy" if args.device.startswith("cuda") else "ops ran"
            lines.append("")
            lines.append(f"Profile of one (a) training step, {c}: {prof['wall_seconds']:.3f} s wall, {what} "
                         f"{prof['busy_seconds']:.3f} s ({100 * prof['busy_seconds'] / prof['wall_seconds']:.0f}%)")
            lines.append(prof["table"].rstrip())
    return lines


def _demo_lines(results, configs):
    """(f): the demo's step time per configuration and its convolutions' share and FLOP rate."""
    if "demo" not in results:
        return []
    d = results["demo"]
    ref_s, our_s = (median_seconds(d[c]["runs"]) for c in configs[:2])
    lines = ["", f"(f) the demo's training step (its model and recipe, {len(d[configs[0]]['runs'])} steps of 2 "
                 f"images at 128-224 px, the same batches), median", f"  reference {ref_s:7.3f} s/step"]
    for c in configs[1:]:
        lines.append(f"  {c:9s} {median_seconds(d[c]['runs']):7.3f} s/step | "
                     f"ref/{c} {fmt_ratio(ref_s, median_seconds(d[c]['runs']))}")
    for c in configs[:2]:
        conv, peak = d[c]["convs"], d[c].get("peak", {}).get("conv", {})
        best_peak = max(peak.values()) if peak else float("nan")
        rate = conv["conv_flops"] / conv["conv_seconds"] if conv["conv_seconds"] else float("nan")
        lines.append(f"  {c:9s} convolutions: {100 * conv['conv_seconds'] / conv['wall_seconds']:.0f}% of a profiled "
                     f"step ({conv['wall_seconds']:.3f} s), {conv['conv_flops'] / 1e9:.1f} of "
                     f"{conv['total_flops'] / 1e9:.1f} GFLOP, at {rate / 1e9:.0f} GFLOP/s against a "
                     f"{best_peak / 1e9:.0f} GFLOP/s fp32 conv peak measured in the same worker "
                     f"({100 * rate / best_peak:.0f}%)")
    return lines


def _photo_lines(results):
    """(e): the photo's --predict time and peak RSS, reference against ours."""
    if "photo" not in results:
        return []
    p = results["photo"]
    ref_s, our_s = (median_seconds(p[c]["runs"]) for c in ("reference", "ours"))
    ref_m, our_m = (max(r["peak_rss_mib"] for r in p[c]["runs"]) for c in ("reference", "ours"))
    n = p["ours"]["runs"][0]["detections"]
    return ["", f"(e) --predict, one {p['size'][0]}x{p['size'][1]} photo, {n} detections, demo model, fresh "
                f"process (time without the model's start-up; peak RSS of the whole process)",
            f"  reference {ref_s:7.2f} s | peak RSS {ref_m:6.0f} MiB",
            f"  ours      {our_s:7.2f} s | peak RSS {our_m:6.0f} MiB | time {fmt_ratio(ref_s, our_s)} faster, "
            f"memory {fmt_ratio(ref_m, our_m)} smaller"]


def _compile_lines(args, results):
    """(d): eager against torch.compile, totals and steady state, and whether the compile time pays."""
    if "compile" not in results:
        return []
    c = compile_summary(results["compile"])
    lines = ["", f"(d) torch.compile, {c['steps']} training steps at {args.epoch_min_size} px, fresh processes, "
                 f"compile time included: ours eager vs ours with torch.compile(model.backbone)"]
    for v in ("eager", "compiled"):
        m = results["compile"][v]["memory"]
        lines.append(f"  {v:9s} total {c[v]['total']:7.1f} s | first step {c[v]['first']:6.1f} s | slowest "
                     f"{c[v]['slowest']:6.1f} s | steady state {c[v]['steady']:5.2f} s/step | peak RSS "
                     f"{m['peak_rss_mib']:.0f} MiB")
    if c["saving_per_step"] > 0:
        saving = (f"saves {c['saving_per_step']:.2f} s/step "
                  f"({100 * c['saving_per_step'] / c['eager']['steady']:.1f}%) once compiled")
    else:
        saving = "is not faster once compiled"
    when = ("is never won back" if c["break_even_steps"] == float("inf")
            else f"is won back after ~{c['break_even_steps']:.0f} steps")
    verdict = "pays" if c["pays"] else "does not pay"
    lines.append(f"  compiled {saving}; the compile time ({c['overhead']:.0f} s more over {c['steps']} steps) {when}; "
                 f"the tutorial's two epochs are {c['tutorial_steps']} steps: {verdict}")
    lines.append(f"  first losses agree to {c['first_losses_max_rel_diff']:.1e} (relative)")
    return lines


def report(args, info, results, configs):
    """The text report: machine, the (a)-(c) table with ratios, memory, FLOPs, COCO AP, then (f), (e), (d)."""
    lines = _machine_lines(args, info)
    if any(phase in results for phase in PHASES):  # (a)-(c); (d) has its own section below
        lines += _time_table(args, results, configs) + _memory_lines(args, results, configs)
    lines += _flops_lines(results, configs) + _coco_lines(results, configs) + _profile_lines(args, results, configs)
    lines += _demo_lines(results, configs) + _photo_lines(results) + _compile_lines(args, results)
    return "\n".join(lines)
