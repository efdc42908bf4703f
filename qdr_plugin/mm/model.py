"""``QDRRestorer``: QDR training as an mmengine ``BaseModel``, on the engine the BasicSR front uses.

The student ``net`` is built from ``network_g`` exactly as ``QDRModel`` builds it (basicsr's arch registry, the
plugin's archs; ``type='mmagic.X'`` through mmengine's registries), ``quant`` and ``train`` are the YAML's ``quant:``
and ``train:`` blocks (less what mmengine's own keys hold: optimizer, schedule, iterations). The switch to QAT is
:class:`~qdr_plugin.mm.hooks.QATSwitchHook`'s, the training step's QDR parts and the checkpoint layout are
:mod:`qdr_plugin.core`'s: one implementation for both fronts.

Batches are dicts ``{'lq': N x C x H x W, 'gt': ..., 'key': [...]}`` (``collate_fn=dict(type='default_collate')``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from torch import nn

from qdr_plugin.core import QDRStep, freeze, start_qat
from qdr_plugin.losses import LearnableMagnitudeReweighting
from qdr_plugin.models.train_options import DFD_KEYS, RELATIONAL_KEYS, distill_layers, relational_layers
from qdr_plugin.prepare import prepare
from qdr_plugin.quant import QuantConfig, is_quantized

from .registry import MODELS

__all__ = ['NON_FINITE_FIX', 'QDRRestorer', 'build_student']

NON_FINITE_FIX = ('lower optim_wrapper.optimizer.lr and resume with --resume from the last checkpoint, or check the '
                  'training images.')


def build_student(network_g: Mapping[str, Any]) -> nn.Module:
    """The network of ``network_g``: basicsr's arch registry (the plugin's archs included), or, for a scoped type
    such as ``'mmagic.SwinIRNet'``, mmengine's model registry."""
    if '.' in str(network_g.get('type', '')):
        return MODELS.build(dict(network_g))
    return build_network(dict(network_g))


def _loss(options: Mapping[str, Any] | None, ours: tuple[str, ...] = ()) -> nn.Module | None:
    return build_loss({k: v for k, v in options.items() if k not in ours}) if options else None


@MODELS.register_module()
class QDRRestorer(BaseModel):
    """QDR quantization-aware training with FP32 self-distillation, DFD and LMR.

    Args:
        network_g: the network options (as the YAML's ``network_g:``).
        quant: the quantization options (``quant:``).
        train: the QDR training options (``train:``): ``fp32_warmup_iter``, ``pixel_opt``, ``pixel_target``,
            ``dfd_opt``, ``output_kd_opt``, ``relational_opt``, ``lmr_opt``, ``step_lr_mult``.
        data_preprocessor: mmengine's (default: moves the batch to the model's device).
    """

    def __init__(self, network_g: dict, quant: dict | None = None, train: dict | None = None,
                 data_preprocessor: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.network_opt, self.train_opt = dict(network_g), dict(train or {})
        self.quant_config = QuantConfig.from_options(quant)
        self.net = build_student(network_g)
        self.teacher: nn.Module | None = None
        lmr_opt = self.train_opt.get('lmr_opt')
        self.lmr = LearnableMagnitudeReweighting(**lmr_opt) if lmr_opt else None
        self.fp32_warmup_iter = int(self.train_opt.get('fp32_warmup_iter') or 0)
        self.step_lr_mult = float(self.train_opt.get('step_lr_mult', 1.0))
        opt = self.train_opt
        self.qdr_step = QDRStep(_loss(opt['pixel_opt']), _loss(opt.get('dfd_opt'), DFD_KEYS),
                                _loss(opt.get('output_kd_opt')), _loss(opt.get('relational_opt'), RELATIONAL_KEYS),
                                self.lmr, opt.get('pixel_target', 'gt'))
        self.teacher_scored = False

    # ------------------------------------------------------------------------------------------- QAT switch
    @property
    def quantized(self) -> bool:
        return is_quantized(self.net)

    def start_qat(self, calibration_batches: Iterable[torch.Tensor]) -> int:
        """Fold, snapshot the teacher, quantize and calibrate (:func:`qdr_plugin.core.start_qat`); returns how many
        activation quantizers were calibrated."""
        started = start_qat(self.net, self._prepare(), calibration_batches)
        self._set_teacher(started.teacher.to(self._device()))
        return started.calibrated

    def quantize_like_checkpoint(self) -> None:
        """Give the model the structure of a QAT checkpoint (quantized student, an FP32 teacher) without calibrating:
        the checkpoint's state then fills in the weights, step sizes and teacher."""
        teacher = self._prepare()(self.net, keep_float=True).float_network
        self._set_teacher(teacher.to(self._device()))

    def _prepare(self) -> Callable[..., Any]:
        return partial(prepare, network_opt=self.network_opt, config=self.quant_config)

    def _set_teacher(self, teacher: nn.Module) -> None:
        self.teacher = freeze(teacher)
        dfd_opt, rel_opt = self.train_opt.get('dfd_opt'), self.train_opt.get('relational_opt')
        dfd = distill_layers(dfd_opt, self.net) if dfd_opt else []
        rel = relational_layers(rel_opt, dfd_opt, self.net) if rel_opt else []
        self.qdr_step.attach(self.net, self.teacher, dfd, rel, 'model.train.dfd_opt.layer')
        self.teacher_scored = False

    def _device(self) -> torch.device:
        return next(self.net.parameters()).device

    def train(self, mode: bool = True) -> QDRRestorer:
        """As ``nn.Module.train``, except that the teacher stays in eval mode."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    # ---------------------------------------------------------------------------------------------- training
    def train_step(self, data: dict, optim_wrapper: OptimWrapper) -> dict[str, torch.Tensor]:
        """One QDR training step with the bare network."""
        return self.qdr_train_step(data, optim_wrapper, self.net)

    def qdr_train_step(self, data: dict, optim_wrapper: OptimWrapper,
                       forward: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
        """zero grad, :meth:`QDRStep.losses <qdr_plugin.core.QDRStep.losses>` (``forward``: the bare network, or
        the DDP wrapper's forward), backward, the optimizer's step, then the step-size projection and LMR's update.
        Returns the loss terms and LMR's weights for the log."""
        data = self.data_preprocessor(data, training=True)
        optim_wrapper.zero_grad()
        losses = self.qdr_step.losses(forward, self.teacher, data['lq'], data['gt'])
        self.qdr_step.check_finite(losses, 'QDRRestorer', 'this training step', NON_FINITE_FIX)
        optim_wrapper.backward(losses.total)
        optim_wrapper.step()
        log = {k: v.detach() for k, v in losses.parts.items()}
        log['loss'] = losses.total.detach()
        lmr_log = self.qdr_step.after_update(self.net, self.teacher is not None, losses.distilled)
        log.update({k: torch.tensor(v) for k, v in lmr_log.items()})
        return log

    # ----------------------------------------------------------------------------------------- evaluation
    def forward(self, inputs: torch.Tensor, data_samples: Any = None, mode: str = 'tensor') -> Any:
        """``mode='tensor'``: the student's output (the DDP wrapper's training forward); ``'predict'``: see
        :meth:`predict`."""
        if mode == 'tensor':
            return self.net(inputs)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        raise ValueError(f"QDRRestorer.forward: mode must be 'tensor' or 'predict', got {mode!r}.")

    def val_step(self, data: dict) -> list[dict[str, Any]]:
        data = self.data_preprocessor(data, training=False)
        return self.predict(data['lq'], data)

    test_step = val_step

    @torch.no_grad()
    def predict(self, lq: torch.Tensor, data: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        """Per image: ``pred`` (the student, INT8 fake-quant once quantized), ``gt`` when given, and ``pred_fp32``
        (the FP32 teacher) until the teacher has been scored once."""
        output = self.net(lq)
        fp32 = self.teacher(lq) if self.teacher is not None and not self.teacher_scored else None
        self.qdr_step.discard_features()
        data = data or {}
        samples = []
        for i in range(lq.shape[0]):
            sample = {'pred': output[i].float().cpu()}
            if fp32 is not None:
                sample['pred_fp32'] = fp32[i].float().cpu()
            if 'gt' in data:
                sample['gt'] = data['gt'][i].float().cpu()
            if 'key' in data:
                sample['key'] = data['key'][i]
            samples.append(sample)
        return samples
