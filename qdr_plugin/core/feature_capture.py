"""Capture intermediate features of a network by module name, with forward hooks."""

from __future__ import annotations

import difflib

import torch
from torch import nn


def resolve_module(net: nn.Module, name: str, key: str) -> nn.Module:
    """``net``'s sub-module called ``name``; a clear ``ValueError`` (naming option ``key``) if there is none."""
    modules = dict(net.named_modules())
    if name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
    hint = f' Did you mean {close}?' if close else ''
    raise ValueError(f"{key}: {type(net).__name__} has no module named '{name}'.{hint}")


class FeatureCapture:
    """Keeps the latest output of each named module of ``net`` in :attr:`features` (graph attached in training)."""

    def __init__(self, net: nn.Module, names: list[str], key: str):
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [
            resolve_module(net, name, key).register_forward_hook(self._hook(name)) for name in names
        ]

    def _hook(self, name: str):
        def store(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            self.features[name] = output

        return store

    def pop(self) -> dict[str, torch.Tensor]:
        """The captured features, forgotten here so they do not outlive the step."""
        features, self.features = self.features, {}
        return features

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
