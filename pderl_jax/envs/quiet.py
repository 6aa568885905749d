"""Notices that would open every command: MJX's about the optional warp, MuJoCo's repeated ones.

- mujoco 4's MJX prints "Failed to import warp: ..." and "Failed to import mujoco_warp: ..." at
  import where NVIDIA warp is not installed. Nothing here uses warp, and brax imports MJX too, so
  the MJX and brax backends import MJX through `import_mjx`, which holds those two lines back
  (anything else it prints is printed). MJX is imported only by the commands that need it (~1.6 s).
- MuJoCo prints a warning at each model load of Gymnasium's HalfCheetah XML (its `settotalmass`
  attribute is deprecated), and the native backend loads one model per episode slot. Where no
  other handler is installed, each distinct MuJoCo warning is printed once per process, to stderr.
"""

import contextlib
import io
import sys

import mujoco

NOTICES = ("Failed to import warp:", "Failed to import mujoco_warp:")


def import_mjx():
    """`mujoco.mjx`, imported without the warp notices."""
    if "mujoco.mjx" not in sys.modules:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            import mujoco.mjx  # noqa: F401
        for line in printed.getvalue().splitlines():
            if not line.startswith(NOTICES):
                print(line)
    return sys.modules["mujoco.mjx"]


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"MuJoCo warning: {message}", file=sys.stderr)


if mujoco.get_mju_user_warning() is None:
    mujoco.set_mju_user_warning(_warn_once)
