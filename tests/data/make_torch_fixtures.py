"""Write real PyTorch checkpoints for tests/test_torch_checkpoint.py. Needs torch (the package
itself never does); run once on a machine that has it:

    python tests/data/make_torch_fixtures.py tests/data

Writes the state dict of a small actor with the official architecture (core/ddpg.py: w_l1,
lnorm1, w_l2, lnorm2, w_out; obs 17, hidden 16 and 12, action 6) in both torch formats:
  torch_actor_zip.pt         torch.save(sd, path)                                    (torch >= 1.6)
  torch_actor_legacy.pkl     torch.save(sd, path, _use_new_zipfile_serialization=False)  (as torch 1.1)
  torch_actor_expected.npz   the same arrays, keys = state-dict names
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

OBS_DIM, HIDDEN1, HIDDEN2, ACTION_DIM = 17, 16, 12, 6


class LayerNorm(nn.Module):
    """core/ddpg.py::LayerNorm: unbiased std, eps outside the square root."""

    def __init__(self, features, eps=1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.gamma * (x - mean) / (std + self.eps) + self.beta


class Actor(nn.Module):
    """core/ddpg.py::Actor with use_ln=True and narrow widths (same attribute names and order)."""

    def __init__(self):
        super().__init__()
        self.w_l1 = nn.Linear(OBS_DIM, HIDDEN1)
        self.lnorm1 = LayerNorm(HIDDEN1)
        self.w_l2 = nn.Linear(HIDDEN1, HIDDEN2)
        self.lnorm2 = LayerNorm(HIDDEN2)
        self.w_out = nn.Linear(HIDDEN2, ACTION_DIM)

    def forward(self, state):
        out = torch.tanh(self.lnorm1(self.w_l1(state)))
        out = torch.tanh(self.lnorm2(self.w_l2(out)))
        return torch.tanh(self.w_out(out))


def main(argv):
    if len(argv) != 2:
        sys.exit(f"usage: python {argv[0]} OUTPUT_DIR")
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(2019)
    actor = Actor()
    with torch.no_grad():  # move gamma/beta off their ones/zeros init so the test sees real values
        for p in (actor.lnorm1.gamma, actor.lnorm1.beta, actor.lnorm2.gamma, actor.lnorm2.beta):
            p.add_(0.1 * torch.randn_like(p))
    sd = actor.state_dict()
    torch.save(sd, out / "torch_actor_zip.pt")
    torch.save(sd, out / "torch_actor_legacy.pkl", _use_new_zipfile_serialization=False)
    np.savez(out / "torch_actor_expected.npz", **{k: v.detach().cpu().numpy() for k, v in sd.items()})
    for name in ("torch_actor_zip.pt", "torch_actor_legacy.pkl"):  # torch reads back what it wrote
        loaded = torch.load(out / name)
        assert list(loaded) == list(sd) and all(torch.equal(loaded[k], sd[k]) for k in sd), name
    print(f"wrote torch {torch.__version__} fixtures to {out}: {list(sd)}")


if __name__ == "__main__":
    main(sys.argv)
