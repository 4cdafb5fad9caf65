"""Fine-tune a slowfast_zoo model on your own videos: one process, or many with ``torchrun`` (DDP).

Data: a folder per class (``train/<class>/<video>``) or a CSV of ``path,label`` rows; ``--val`` the same way (its
classes are matched to the training classes by name). Unreadable videos are skipped and reported with a count.

    python examples/finetune.py --model slowfast_r50_8x8 --train data/train --val data/val --output runs/pets \\
        --epochs 10 --batch-size 8 --lr 0.01 --amp --freeze-up-to res3
    torchrun --nproc_per_node 4 examples/finetune.py ...same arguments...     # DDP: NCCL on GPU, gloo on CPU
    python examples/finetune.py ...same arguments... --resume                 # continue from runs/pets/last.pt

Training follows the checkpoint's own recipe for what it can (clip sampling, scale jitter, random crop and flip,
mean/std from ``model.pretrained_cfg``) and the habits of fine-tuning scripts for the rest: SGD with momentum (or
AdamW), linear warm-up then cosine decay per optimizer step, no weight decay on BatchNorm parameters and biases,
gradient accumulation (``--accum-steps``), mixed precision (``--amp``: bfloat16 on CPU, float16 with loss scaling on
GPU). Evaluation runs the reference multi-view protocol (``--eval-views reference``, e.g. 10 clips x 3 crops for
Kinetics-style configs) through :func:`slowfast_zoo.predict`.

The global batch is ``--batch-size x processes x --accum-steps``. Samples are drawn from ``(seed, epoch, index)``
only, so N processes see exactly the clips one process sees with an N-times larger batch. BatchNorm: ``--bn train``
(default) normalizes with each process's own batch, like PySlowFast; ``--bn sync`` converts to SyncBatchNorm (GPU);
``--bn eval`` keeps BatchNorm statistics fixed (their scale and shift still train), which makes DDP training equal
to one-process training with the same global batch.

Checkpoints: ``OUTPUT/last.pt`` (model, optimizer, scheduler, loss scaler, position, every rank's RNG state) after
every epoch and every ``--save-every-steps`` optimizer steps, written atomically; ``--resume`` continues from it
bit-exactly, mid-epoch included. At the end, ``OUTPUT/model`` holds ``model.safetensors`` + ``config.json`` (with
the class names) + ``README.md``; ``--push-to-hub org/name`` uploads it. Load it back with
``slowfast_zoo.create("local-dir:OUTPUT/model")``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

import slowfast_zoo
from slowfast_zoo.tasks.data import ShardedSampler, VideoClipDataset, collate_clips, read_rows
from slowfast_zoo.video.io import VideoError
from slowfast_zoo.weights.publish import push_to_hub, save_pretrained

STAGES = ("stem", "res2", "res3", "res4", "res5")


# ---- arguments ----------------------------------------------------------------------------------------------------
def _value(text: str) -> Any:
    """``8`` -> 8, ``0.5`` -> 0.5, ``true`` -> True, ``40,48`` -> (40, 48), anything else stays a string."""
    if "," in text:  # a trailing comma makes a one-item tuple: test_crops=center,
        return tuple(_value(t) for t in text.split(",") if t)
    try:
        return json.loads(text)
    except ValueError:
        return text


def _key_values(items: list[str] | None, option: str = "", fields: type | None = None) -> dict[str, Any]:
    """``key=value`` items as a dict; with ``fields`` (a dataclass), unknown keys are refused listing the valid ones."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{option}: expected key=value, got {item!r}")
        out[key.strip()] = _value(value.strip())
    if fields is not None:
        valid = sorted(f.name for f in dataclasses.fields(fields) if f.init)
        unknown = sorted(set(out) - set(valid))
        if unknown:
            raise SystemExit(f"{option}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(valid)}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="slowfast_r50_8x8", help="zoo name or hf-hub:org/name (%(default)s)")
    g.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="start from random weights")
    g.add_argument("--checkpoint", help="start from this weights file instead of the published weights")
    g.add_argument("--model-kwargs", nargs="*", metavar="K=V", help="ResNet3dConfig overrides, e.g. dropout=0.3")
    g.add_argument(
        "--data-cfg",
        nargs="*",
        metavar="K=V",
        help="pretrained_cfg overrides, e.g. train_crop_size=160 train_short_side=182,228 test_clips=2",
    )
    g.add_argument("--freeze-up-to", choices=STAGES, help="freeze the stem up to this stage (BatchNorm frozen too)")
    g.add_argument("--stage-decay", type=float, default=1.0, help="lr x decay ** (stages before the head)")
    g.add_argument("--bn", choices=["train", "eval", "sync"], default="train", help="BatchNorm mode (see above)")
    g = p.add_argument_group("data")
    g.add_argument("--train", required=True, help="folder per class, or CSV of path,label")
    g.add_argument("--val", help="folder per class, or CSV of path,label")
    g.add_argument("--workers", type=int, default=4, help="DataLoader workers per process (%(default)s)")
    g.add_argument("--no-probe", dest="probe", action="store_false", help="don't open every video before training")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=8, help="clips per process per micro-step (%(default)s)")
    g.add_argument("--accum-steps", type=int, default=1, help="micro-steps per optimizer step (%(default)s)")
    g.add_argument("--opt", choices=["sgd", "adamw"], default="sgd")
    g.add_argument("--lr", type=float, default=0.01)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--warmup-steps", type=int, default=0, help="optimizer steps of linear warm-up")
    g.add_argument("--sched", choices=["cosine", "constant"], default="cosine")
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--clip-grad", type=float, help="clip the gradient norm to this value")
    g.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on CPU, float16 on GPU)")
    g.add_argument("--amp-dtype", choices=["float16", "bfloat16"], help="override the autocast dtype")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("run")
    g.add_argument("--output", required=True, help="folder for last.pt, log.jsonl and the final model")
    g.add_argument("--resume", nargs="?", const="auto", help="continue from OUTPUT/last.pt (or this file)")
    g.add_argument("--save-every-steps", type=int, default=0, help="also checkpoint every N optimizer steps")
    g.add_argument("--eval-views", choices=["reference", "fast"], default="reference")
    g.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs (and after the last)")
    g.add_argument("--device", help="default: cuda (this process's GPU under torchrun) if available, else cpu")
    g.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload the final model to the Hugging Face Hub")
    g.add_argument("--hub-private", action="store_true")
    g.add_argument("--stop-after-steps", type=int, help=argparse.SUPPRESS)  # simulate an interruption (tests)
    return p


# ---- distributed --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_arg: str | None) -> tuple[Dist, torch.device]:
    """torchrun's environment -> process group (NCCL on GPU, gloo on CPU) and this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    d = Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device_arg:
        device = torch.device(device_arg)
    else:
        device = torch.device("cuda", d.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if d.enabled:
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
        )
    return d, device


# ---- model --------------------------------------------------------------------------------------------------------
def build_model(args: argparse.Namespace, num_classes: int, device: torch.device) -> nn.Module:
    """The zoo model with a new ``num_classes`` head, the data-config overrides and the freezing asked for."""
    torch.manual_seed(args.seed)  # the new classifier (and random weights) are the same on every rank
    kwargs = _key_values(args.model_kwargs, "--model-kwargs", slowfast_zoo.ResNet3dConfig)
    model = slowfast_zoo.create(
        args.model,
        pretrained=args.pretrained and args.checkpoint is None,
        checkpoint=args.checkpoint,
        num_classes=num_classes,
        device=device,
        **kwargs,
    )
    cfg = model.pretrained_cfg.replace(**_key_values(args.data_cfg, "--data-cfg", slowfast_zoo.PretrainedCfg))
    # evaluate with the head pooling the model has (predict() warns when the config asks for the fixed kernel)
    model.pretrained_cfg = cfg.replace(test_head_pool=model.cfg.head_pool)
    if args.freeze_up_to:
        slowfast_zoo.freeze(model, up_to=args.freeze_up_to, bn="frozen")
    return model


def set_bn_eval(model: nn.Module) -> None:
    """BatchNorm layers normalize with their running statistics and stop updating them (affine params train)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def export_model(model: nn.Module) -> nn.Module:
    """A plain zoo model with this model's weights (frozen BatchNorms and SyncBatchNorms turned back)."""
    plain = slowfast_zoo.ResNet3d(model.cfg)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    plain.load_state_dict(state, strict=True)  # frozen and synchronized BatchNorms keep BatchNorm3d's keys
    plain.pretrained_cfg = model.pretrained_cfg
    return plain.eval()


# ---- optimization -------------------------------------------------------------------------------------------------
def build_optimizer(args: argparse.Namespace, model: nn.Module) -> torch.optim.Optimizer:
    groups = slowfast_zoo.param_groups(model, args.lr, weight_decay=args.weight_decay, stage_decay=args.stage_decay)
    for g in groups:
        g["initial_lr"] = g["lr"]
    if args.opt == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum)
    return torch.optim.AdamW(groups, lr=args.lr)


def lr_factor(step: int, total: int, warmup: int, sched: str) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine to 0 at ``total`` (or constant)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if sched == "constant" or total <= warmup:
        return 1.0
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * factor


# ---- checkpoints --------------------------------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    import random

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, d: Dist, state: dict[str, Any]) -> None:
    """Every rank's RNG state is gathered; rank 0 writes the file atomically (temp file + rename)."""
    rng = _rng_state()
    if d.enabled:
        all_rng: list[Any] = [None] * d.world_size
        dist.all_gather_object(all_rng, rng)
    else:
        all_rng = [rng]
    if d.main:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save({**state, "rng": all_rng, "world_size": d.world_size}, tmp)
        os.replace(tmp, path)
    if d.enabled:
        dist.barrier()


# ---- evaluation ---------------------------------------------------------------------------------------------------
def evaluate(model: nn.Module, rows: list[Any], views: str, d: Dist, device: torch.device) -> dict[str, float]:
    """Top-1 / top-5 accuracy and the mean negative log-likelihood of the protocol's combined scores."""
    sums = torch.zeros(4, dtype=torch.float64)  # top1, top5, nll, count
    skipped = 0
    for row in rows[d.rank :: d.world_size]:
        try:
            pred = slowfast_zoo.predict(row.path, model, views=views, top_k=5)
        except VideoError as e:
            skipped += 1
            print(f"eval: skipped {e}", file=sys.stderr)
            continue
        scores = pred.scores.double()
        top = scores.topk(min(5, scores.numel())).indices.tolist()
        sums += torch.tensor(
            [float(top[0] == row.label), float(row.label in top), -math.log(max(float(scores[row.label]), 1e-12)), 1.0],
            dtype=torch.float64,
        )
    sums = torch.cat([sums, torch.tensor([float(skipped)], dtype=torch.float64)])
    if d.enabled:
        sums = sums.to(device)
        dist.all_reduce(sums)
        sums = sums.cpu()
    n = max(sums[3].item(), 1.0)
    return {
        "val_top1": sums[0].item() / n,
        "val_top5": sums[1].item() / n,
        "val_nll": sums[2].item() / n,
        "val_videos": int(sums[3].item()),
        "val_skipped": int(sums[4].item()),
    }


# ---- training -----------------------------------------------------------------------------------------------------
def _to(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, (list, tuple)):
        return [x.to(device, non_blocking=True) for x in inputs]
    return inputs.to(device, non_blocking=True)


def _diverged(loss: torch.Tensor, epoch: int, step: int, args: argparse.Namespace, out: Path) -> str:
    """The one-line error for a non-finite training loss."""
    hint = "; try without --amp" if args.amp else ""
    return (
        f"{out}: training loss is {loss.item()} at epoch {epoch}, step {step}: stopped, nothing saved past the last "
        f"checkpoint (lower --lr{hint})"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    _key_values(args.model_kwargs, "--model-kwargs", slowfast_zoo.ResNet3dConfig)  # refuse typos before any work
    _key_values(args.data_cfg, "--data-cfg", slowfast_zoo.PretrainedCfg)
    if args.accum_steps < 1 or args.batch_size < 1:
        raise SystemExit("--batch-size and --accum-steps must be at least 1")
    d, device = init_distributed(args.device)
    out = Path(args.output)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    try:
        return _train(args, d, device, out)
    finally:
        if d.enabled:
            dist.destroy_process_group()


def _log(out: Path, d: Dist, record: dict[str, Any]) -> None:
    if not d.main:
        return
    line = json.dumps(record)
    print(line, flush=True)
    with open(out / "log.jsonl", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _train(args: argparse.Namespace, d: Dist, device: torch.device, out: Path) -> dict[str, Any]:
    train_rows = read_rows(args.train)
    class_names = train_rows.class_names
    val_rows = read_rows(args.val, class_names=class_names) if args.val else None

    model = build_model(args, len(class_names), device)
    if args.bn == "sync":
        if not d.enabled or device.type != "cuda":
            raise SystemExit("--bn sync needs several GPU processes (torchrun on GPUs)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_set = VideoClipDataset(train_rows, model, "train", seed=args.seed, probe=args.probe)
    if d.main:
        print(
            f"train: {len(train_set)} videos, {len(class_names)} classes; {train_set.skipped.summary()}",
            file=sys.stderr,
        )
    sampler = ShardedSampler(
        len(train_set), args.batch_size, rank=d.rank, world_size=d.world_size, shuffle=True, seed=args.seed
    )
    micro_per_epoch = sampler.steps_per_epoch()
    steps_per_epoch = micro_per_epoch // args.accum_steps
    if steps_per_epoch == 0:
        raise SystemExit(
            f"{len(train_set)} usable videos are fewer than one global batch "
            f"({args.batch_size} x {d.world_size} processes x {args.accum_steps} accumulation steps)"
        )
    total_steps = steps_per_epoch * args.epochs

    optimizer = build_optimizer(args, model)
    amp_dtype = (
        getattr(torch, args.amp_dtype)
        if args.amp_dtype
        else (torch.float16 if device.type == "cuda" else torch.bfloat16)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    epoch, step_in_epoch, global_step = 0, 0, 0
    ckpt_path = out / "last.pt"
    resume = None if args.resume is None else (ckpt_path if args.resume == "auto" else Path(args.resume))
    if resume is not None and resume.exists():
        state = torch.load(resume, map_location="cpu", weights_only=False)
        if state["world_size"] != d.world_size:
            raise SystemExit(f"{resume} was written by {state['world_size']} processes; resume with as many")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        _set_rng_state(state["rng"][d.rank])
        if d.main:
            print(f"resumed from {resume}: epoch {epoch}, step {step_in_epoch}", file=sys.stderr)
    elif resume is not None and args.resume != "auto":
        raise SystemExit(f"--resume: no such file {resume}")
    else:
        torch.manual_seed(args.seed + d.rank)  # dropout masks differ per rank, and are reproducible

    ddp = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if d.enabled
        else model
    )
    loader_gen = torch.Generator().manual_seed(args.seed)  # the loader never draws from the global RNG
    loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        # workers start from a clean server process, not forked from this one: a fork copies a process whose other
        # threads (decoder threads, OpenMP, a test runner's) may hold locks, and the child can wait on them forever
        multiprocessing_context="forkserver" if args.workers > 0 and sys.platform == "linux" else None,
        collate_fn=collate_clips,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=False,
        generator=loader_gen,
    )

    def checkpoint() -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": global_step,
            "args": vars(args),
            "class_names": class_names,
        }
        save_checkpoint(ckpt_path, d, state)

    metrics: dict[str, Any] = {}
    while epoch < args.epochs:
        model.train()
        if args.bn == "eval":
            set_bn_eval(model)
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch, start_step=step_in_epoch * args.accum_steps)
        loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
        t0 = time.perf_counter()
        micro = 0
        for inputs, labels in loader:
            if step_in_epoch >= steps_per_epoch:
                break  # micro-batches that don't complete an accumulation are left out
            inputs, labels = _to(inputs, device), labels.to(device)
            micro += 1
            last_micro = micro % args.accum_steps == 0
            sync = contextlib.nullcontext() if (last_micro or not d.enabled) else ddp.no_sync()
            with sync:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp):
                    loss = criterion(ddp(inputs), labels)
                if not torch.isfinite(loss.detach()).item():
                    raise SystemExit(_diverged(loss, epoch, global_step, args, out))
                scaler.scale(loss / args.accum_steps).backward()
            loss_sum += torch.stack(
                [
                    loss.detach().double() * labels.shape[0],
                    torch.tensor(labels.shape[0], dtype=torch.float64, device=device),
                ]
            )
            if not last_micro:
                continue
            set_lr(optimizer, lr_factor(global_step, total_steps, args.warmup_steps, args.sched))
            if args.clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step_in_epoch += 1
            global_step += 1
            if args.save_every_steps and global_step % args.save_every_steps == 0 and step_in_epoch < steps_per_epoch:
                checkpoint()
            if args.stop_after_steps and global_step >= args.stop_after_steps:
                _log(out, d, {"stopped_at_step": global_step})
                return {"stopped_at_step": global_step}
        if d.enabled:
            dist.all_reduce(loss_sum)
        seconds = time.perf_counter() - t0
        metrics = {
            "epoch": epoch,
            "step": global_step,
            "train_loss": loss_sum[0].item() / max(loss_sum[1].item(), 1.0),
            "clips_per_s": loss_sum[1].item() / max(seconds, 1e-9),
            "lr": optimizer.param_groups[0]["lr"],
        }
        epoch += 1
        step_in_epoch = 0
        if val_rows is not None and (epoch % args.eval_every == 0 or epoch == args.epochs):
            metrics.update(evaluate(model, val_rows.rows, args.eval_views, d, device))
        _log(out, d, metrics)
        checkpoint()

    if d.main:
        final = export_model(model)
        bad = [n for n, t in final.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:  # never save NaN weights as a result
            raise SystemExit(f"{out}: non-finite weights after training ({', '.join(bad[:3])}, ...); nothing saved")
        folder = save_pretrained(final, out / "model", label_names=class_names)
        print(f"saved {folder}", file=sys.stderr)
        if args.push_to_hub:
            result = push_to_hub(final, args.push_to_hub, label_names=class_names, private=args.hub_private or None)
            print(f"pushed {result}", file=sys.stderr)
    if d.enabled:
        dist.barrier()
    return metrics


if __name__ == "__main__":
    main()
