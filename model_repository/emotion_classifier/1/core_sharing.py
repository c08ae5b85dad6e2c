"""Lets a Python-backend classifier's forward pass use more threads while its other instances are idle.

Used by onnx_model.py (a sibling module: the Python backend puts a model's
version folder on sys.path).
"""

import contextlib
import mmap
import os
import tempfile


class CoreSharing:
    """Lets a forward pass use more threads while the model's other instances are idle.

    Instances are separate processes: each marks itself busy for a whole execute() in its
    byte of a small file they all map.
    """

    def __init__(self, args, config):
        names = [f"{group['name']}_{i}" for group in config["instance_group"] for i in range(int(group["count"]))]
        self.slot = names.index(args["model_instance_name"])
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        # Named after the server process: the instances of this server, and only those, share it.
        self.path = os.path.join(folder, f"{args['model_name']}_busy_instances_{os.getppid()}")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < len(names):
                os.ftruncate(fd, len(names))
            self.board = mmap.mmap(fd, len(names))
        finally:
            os.close(fd)
        self.board[self.slot] = 0  # a restarted instance clears the mark of the one it replaces
        self.spread = False

    @contextlib.contextmanager
    def busy(self, spread: bool):
        """Marks this instance busy for a whole execute(); `spread`: it may use idle cores."""
        self.board[self.slot] = 1
        self.spread = spread
        try:
            yield
        finally:
            self.board[self.slot] = 0
            self.spread = False

    def alone(self) -> bool:
        """Asked before each forward pass: may it use every core? Two instances that mark themselves
        busy together both see the other busy."""
        return self.spread and not any(self.board[: self.slot] + self.board[self.slot + 1 :])

    def close(self):
        self.board.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass  # another instance removed it first
