"""The project's checkout and clean copies of it: `git status` before and after, a clean clone of the
working tree (the lab's working_tree_copy, which the benchmark's container phase uses too)."""

from __future__ import annotations

from pathlib import Path

from emotion_lab.containers.cpu_host import git, working_tree_copy

PROJECT = Path(__file__).resolve().parents[2]


def git_status(folder: Path) -> list[str]:
    """What `git status` shows in `folder`: every untracked or changed file, one per line (ignored ones not)."""
    return git(folder, "status", "--porcelain", "--untracked-files=all").splitlines()


def git_checkout(target: Path) -> Path:
    """A clean clone of the project's working tree in `target` (containers.cpu_host.working_tree_copy)."""
    return working_tree_copy(PROJECT, target)
