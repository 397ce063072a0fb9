"""The files of a run directory, each written atomically (an interrupted run leaves no partial
file):

  config.json         the resolved configuration (what --resume rebuilds the run from)
  log.jsonl           one line per evaluation: forward passes, train loss, accuracies, time
  state.pt            optimizer and progress at the last evaluation (what --resume continues)
  prompt.safetensors  the selected iterate with what it belongs to and its head (prompt_file.py)
  accuracy.png        validation and test accuracy against forward passes
  summary.json        zero-shot and tuned accuracies, forward passes, wall time, peak memory
  .lock               held (flock) by the process that writes the run: a second writer is
                      refused (Note [One writer per run directory])
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import fcntl
import json
import os
import pickle
from pathlib import Path
from typing import Iterator

import torch

from sharpzo_ext.clip.runs import prompt_file
from sharpzo_ext.clip.runs.config import RunError, TrainConfig
from sharpzo_ext.clip.task.ensemble import Ensemble
from sharpzo_ext.clip.task.tuned import Tuned
from sharpzo_ext.files import atomic_path, path_problem, write_json, write_text

__all__ = ["Progress", "RunDir", "check_out", "read_config_file"]


def check_out(out: Path) -> None:
    """Refuses an output path that cannot be a directory: an existing file, or a path under
    one."""
    problem = path_problem(out, directory=True)
    if problem:
        raise RunError(problem)


def read_config_file(path: Path) -> TrainConfig:
    """A run's config.json, or RunError if it is unreadable, incomplete or invalid."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunError(f"cannot read {path}: {error}") from None
    return TrainConfig.from_saved(saved, str(path))


@dataclasses.dataclass
class Progress:
    """A run's progress: one log row per evaluation (the first at w = 0) and the best iterate so
    far, by validation accuracy (ties: the lower training loss); what state.pt keeps of it."""
    best: dict
    log: list[dict]

    @property
    def elapsed(self) -> float:
        """Training seconds so far (the last row's)."""
        return self.log[-1]["wall_time_s"]

    def add(self, row: dict, w: torch.Tensor, val: float) -> None:
        """An evaluation's row, and its iterate w as the best if it is (val: the validation
        accuracy that selects iterates)."""
        self.log.append(row)
        loss, best = row["train_loss"], self.best
        if val > best["val_acc"] or (val == best["val_acc"] and loss < best["train_loss"]):
            self.best = {"val_acc": val, "w": w, "forward_passes": row["forward_passes"],
                         "train_loss": loss}


@dataclasses.dataclass(frozen=True)
class RunDir:
    """A run directory: its files (the module's docstring), each written atomically, its lock,
    and the checks a new run and a resumed one make of it."""
    path: Path

    def check_new(self) -> None:
        """Refuses a directory that already holds a run."""
        if (self.path / "summary.json").exists() or (self.path / "state.pt").exists():
            raise RunError(f"{self.path} already holds a run; use --resume to continue it, or "
                           "another --out")

    # Note [One writer per run directory]
    # Two processes writing one run directory would interleave their logs, states and prompts,
    # and leave a directory that resumes neither run. The writer holds an exclusive advisory lock
    # (flock) on the directory's .lock for as long as it runs; a second writer finds it held and
    # is refused at once. The kernel drops the lock when its holder exits, however it exits, so a
    # crashed run never leaves the directory locked.
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Holds the run directory's lock (creating the directory), or raises RunError if another
        process holds it."""
        lock = self.path / ".lock"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # never through a link: a run creates no file outside its directory
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise RunError(f"{lock} is a symbolic link; a run's lock is its own file, never "
                               "followed elsewhere: remove the link") from None
            raise RunError(f"cannot write the run directory {self.path}: "
                           f"{error.strerror}") from None
        with os.fdopen(fd, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunError(f"{self.path} is in use by another run (it holds {lock}); wait "
                               "for it to end, or use another --out") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read_config(self) -> TrainConfig:
        """The saved configuration of a run to resume."""
        if not (self.path / "config.json").is_file() or not (self.path / "state.pt").is_file():
            raise RunError(f"{self.path} is not a run directory to resume (no config.json / "
                           "state.pt)")
        return read_config_file(self.path / "config.json")

    def write_config(self, config: TrainConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / "config.json", dataclasses.asdict(config))

    def save_progress(self, optimizer: torch.optim.Optimizer, w: torch.Tensor,
                      progress: Progress, ensemble: Ensemble | None, identity: dict) -> None:
        """log.jsonl and state.pt: everything --resume needs to continue the same trajectory
        (the head the prompt is tuned for included), and the identity of the model and the data
        it is tuned on (Note [A resume checks what it resumes])."""
        log = progress.log
        write_text(self.path / "log.jsonl", "".join(json.dumps(row) + "\n" for row in log))
        with atomic_path(self.path / "state.pt") as tmp:
            torch.save({"optimizer": copy.deepcopy(optimizer.state_dict()),
                        "w": w.detach().clone(), "best": progress.best, "log": log,
                        "ensemble": None if ensemble is None else ensemble.state(),
                        "identity": json.dumps(identity, sort_keys=True, default=str)}, tmp)

    # Note [A resume checks what it resumes]
    # A run's optimizer state means something only for the model and the data it was tuned on.
    # state.pt records both identities (the model's name and weight files, the data's files with
    # their sizes and modification times); a resume compares them with what the same options
    # load now, and refuses the run in one line naming what changed: a checkpoint directory
    # overwritten, an hf: name that now resolves to a newer snapshot, images replaced. Runs from
    # before this record resume unchecked.
    def check_identity(self, state: dict, identity: dict) -> None:
        """RunError, naming the model or the data, if `identity` is not what the state
        records."""
        if "identity" not in state:
            return
        try:
            saved = json.loads(state["identity"])
            if not isinstance(saved, dict):
                raise ValueError("not a record")
        except (TypeError, ValueError):
            raise RunError(f"cannot resume {self.path}: its state.pt holds a damaged identity "
                           "record (the model and data it was tuned on)") from None
        now = json.loads(json.dumps(identity, sort_keys=True, default=str))
        for what, changed in (("model", "the model's weights are not those the run was tuned "
                               "with (its files changed, or its name now resolves elsewhere)"),
                              ("data", "the data is not what the run was tuned on (images added, "
                               "removed or replaced)")):
            if saved.get(what) != now.get(what):
                raise RunError(f"cannot resume {self.path}: {changed}; start a new run with "
                               "--out")

    # Note [Run state holds no code]
    # state.pt is torch.save's pickle of tensors, numbers, strings, lists and dicts: optimizer
    # state dicts, the prompt, the log and the head. It is read with torch.load(weights_only=True),
    # whose unpickler builds only those types and refuses any other object before constructing
    # it: a state.pt crafted to run code when unpickled (an object with a __reduce__) is refused,
    # and the code never runs. Every state.pt that sharpzo_ext has written, since 0.1.0, loads
    # this way.
    def load_progress(self) -> dict:
        """state.pt: {"optimizer": state dict, "w", "best", "log"}, or RunError if it is damaged
        or holds anything else than tensors and plain data (Note [Run state holds no code])."""
        path = self.path / "state.pt"
        try:
            state = torch.load(path, weights_only=True)
        except pickle.UnpicklingError as error:
            if "Weights only load failed" not in str(error):
                raise RunError(f"cannot read {path} (damaged?): "
                               f"{str(error).splitlines()[0]}") from None
            raise RunError(f"{path} holds objects other than tensors and plain data, which "
                           "sharpzo_ext never writes and does not load (unpickling them could run "
                           "code); start the run again rather than resume a directory you cannot "
                           "trust") from None
        except Exception as error:  # noqa: BLE001 (torch.load's unpickler raises what it meets:
            # OSError, EOFError, zipfile.BadZipFile, IndexError on a text file; each is one error)
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            raise RunError(f"cannot read {path} (damaged?): {reason}") from None
        if not (isinstance(state, dict) and {"optimizer", "w", "best", "log"} <= set(state)):
            raise RunError(f"{path} is not the state of a run")
        return state

    def save_prompt(self, tuned: Tuned, w: torch.Tensor, about: dict,
                    ensemble: Ensemble | None = None) -> None:
        """prompt.safetensors (prompt_file.save)."""
        prompt_file.save(self.path / "prompt.safetensors", tuned, w, about, ensemble)

    def plot(self, log: list[dict], zero_shot: dict[str, float], title: str) -> None:
        """accuracy.png: validation and test accuracy against forward passes."""
        _plot_accuracy(self.path / "accuracy.png", log, zero_shot, title)

    def write_summary(self, summary: dict) -> None:
        write_json(self.path / "summary.json", summary)


def _plot_accuracy(path: Path, log: list[dict], zero_shot: dict[str, float], title: str) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 4))
    x = [row["forward_passes"] for row in log]
    for split, style in (("val", "-"), ("test", "-"), ("shifted", "--")):
        if log and f"{split}_acc" in log[0]:
            ax.plot(x, [row[f"{split}_acc"] for row in log], style, label=split)
    if "test" in zero_shot:
        ax.axhline(zero_shot["test"], color="gray", linestyle=":", label="zero-shot test")
    ax.set_xlabel("forward passes")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
