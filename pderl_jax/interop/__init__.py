"""Interoperation with the official PyTorch code: its state-dict layout and a torch-free reader of its files."""
