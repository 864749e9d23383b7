"""What a training session reports while it runs (on stderr and in ``log.csv``, rank 0 only): the
tqdm bar, one log row every ``--log-every`` steps (loss and statistics averaged over the ranks),
the measured ETA (with a hint when a CPU run would take many hours), and the peak memory.
"""
from __future__ import annotations

import math
import resource
import sys
import time
from typing import Dict, List, Optional

import torch
from tqdm import tqdm

from .config import TrainConfig
from .distributed import all_mean, all_sum_int, say
from .launch import DistContext
from .rundir import RunLogger

#: CPU runs whose measured ETA (after the first steps) exceeds this get a hint pointing to
#: ``--preset cpu-1h``, hours. No estimate is printed before steps have been timed on this machine.
CPU_WARN_HOURS = 2.0


def peak_mem_mib(device: torch.device) -> float:
    """CUDA: peak memory allocated by tensors on ``device``; CPU: this process's peak resident
    set size (Linux ``ru_maxrss``); MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fmt_duration(seconds: float) -> str:
    """``H:MM:SS`` of a duration in seconds (rounded; negative as 0)."""
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


class Progress:
    """The reports of one training session (a call of :func:`hvc.trainer.train`).

    Args:
        config: the run's settings (``progress``, ``tensorboard``, ``preset``).
        ctx, device: this process in the run; the bar, the log and the messages are rank 0's,
            the collectives of :meth:`log` run on every rank.
        steps_per_epoch: for the epoch column.
        stop_at: the step this session ends after; start_step: the step it starts from.
        logger: rank 0's :class:`hvc.rundir.RunLogger`, None on the other ranks.
        history: the list that receives the images/s of each log row (the run's median).
        t_start: ``time.time()`` at the session's start (the ``elapsed_s`` column).
    """

    def __init__(self, config: TrainConfig, ctx: DistContext, device: torch.device, steps_per_epoch: int,
                 stop_at: int, start_step: int, logger: Optional[RunLogger], history: List[float], t_start: float):
        self.config, self.ctx, self.device, self.logger, self.history = config, ctx, device, logger, history
        self.steps_per_epoch, self.stop_at, self.start_step, self.t_start = steps_per_epoch, stop_at, start_step, t_start
        self.bar = tqdm(total=stop_at, initial=start_step, disable=not (config.progress and ctx.is_main),
                        dynamic_ncols=True, unit="step")
        self.t_log, self.frames_since = time.perf_counter(), 0
        self.t_first: Optional[float] = None  # end of the session's first step (the ETA leaves its warm-up out)
        self.last_loss: Optional[float] = None  # of the last log row (mean over the ranks)

    def say(self, message: str) -> None:
        """One line on stderr from rank 0, above the progress bar when there is one."""
        if self.ctx.is_main and not self.bar.disable:
            self.bar.write(message, file=sys.stderr)
        else:
            say(self.ctx, message)

    def count(self, frames: int) -> None:
        """Add one step's frames (of this rank; all ranks' are counted) to the images/s measure."""
        self.frames_since += frames * self.ctx.world_size

    def log(self, step: int, out: Dict[str, torch.Tensor], momentum: float, lr: float, skipped_base: int,
            skipped_local: int) -> None:
        """The log row of ``step`` (``out``: the model's output dict) to ``log.csv`` / TensorBoard and
        the bar (without a bar: a line with the ETA). A collective.

        Raises:
            FloatingPointError: the loss (mean over the ranks) is not finite.
        """
        stats = all_mean([float(out["loss"].detach()), float(out["spatial"]), float(out["temporal"]),
                          float(out["num_pos"]), float(out["no_pos_frac"])], self.ctx, self.device)
        self.last_loss = stats[0]
        if not math.isfinite(self.last_loss):
            raise FloatingPointError(f"non-finite loss {self.last_loss} at step {step}")
        now = time.perf_counter()
        ips = self.frames_since / max(now - self.t_log, 1e-9)
        self.t_log, self.frames_since = now, 0
        self.history.append(ips)
        skipped_total = skipped_base + all_sum_int(skipped_local, self.ctx, self.device)
        peak = peak_mem_mib(self.device)
        row = {"step": step, "epoch": step / self.steps_per_epoch, "loss": self.last_loss,
               "spatial": stats[1], "temporal": stats[2], "num_pos": stats[3], "no_pos_frac": stats[4],
               "momentum": momentum, "lr": lr, "images_per_s": round(ips, 3), "peak_mem_mib": round(peak, 1),
               "skipped_total": skipped_total, "elapsed_s": round(time.time() - self.t_start, 3)}
        if self.logger is not None:
            self.logger.log(row)
        self.bar.set_postfix(loss=f"{self.last_loss:.4f}", img_s=f"{ips:.1f}", mem=f"{peak:.0f}MiB",
                             skipped=skipped_total, refresh=False)
        if self.bar.disable and self.t_first is not None and step > self.start_step + 1:
            eta = (now - self.t_first) / (step - self.start_step - 1) * (self.stop_at - step)
            say(self.ctx, f"step {step}/{self.stop_at} (epoch {step / self.steps_per_epoch:.2f}): loss "
                          f"{self.last_loss:.4f}, {ips:.2f} images/s, peak {peak:.0f} MiB, ETA {fmt_duration(eta)}")

    def advance(self, step: int) -> float:
        """``step`` is done: move the bar; after the session's second step, print the first
        measured ETA (the first step, with its warm-up, left out). Returns ``time.perf_counter()``."""
        self.bar.update(1)
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first = now
        elif step == self.start_step + 2 and step < self.stop_at:
            eta = (now - self.t_first) * (self.stop_at - step)
            msg = f"hvc.train: {now - self.t_first:.2f} s per step after the first steps: ETA {fmt_duration(eta)}"
            if self.device.type == "cpu" and eta >= CPU_WARN_HOURS * 3600 and self.config.preset != "cpu-1h":
                msg += f" (about {eta / 3600:.0f} h on this CPU; for about one hour use --preset cpu-1h)"
            self.say(msg)
        return now

    def close(self) -> None:
        """Close the bar and the log."""
        self.bar.close()
        if self.logger is not None:
            self.logger.close()
