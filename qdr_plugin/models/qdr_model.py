"""``QDRModel``: quantization-aware training with FP32 self-distillation, DFD and LMR, on basicsr's ``SRModel``.

The switch to QAT, the QDR parts of the training step and the checkpoint layout are :mod:`qdr_plugin.core`'s, which
the mmengine front (:mod:`qdr_plugin.mm`) calls too; this class adds basicsr's life cycle around them (options,
schedulers, validation, checkpoint files, resume).

Stages (docs/method.md):

A. FP32: ``train.fp32_warmup_iter`` iterations of plain FP32 training (or none, with ``path.pretrain_network_g``
   an FP32 checkpoint).
B. QAT: BatchNorm is folded, the teacher becomes a frozen FP32 copy of the network as it is now (self-distillation:
   no foreign teacher), the student gets fake quantizers (``quant:`` block), activation step sizes are calibrated on
   ``quant.calib_batches`` training batches, then the student trains with

   ``L = w_rec * L_pix(student(x), gt) + w_kd * L_kd``  (``train.pixel_target: teacher``: ``L_pix(student(x),
   teacher(x))``, for a published network whose own training data is not at hand),
   ``L_kd = d(F_b(student, x), stopgrad(F_b(teacher, x)))``  (DFD: the bottleneck only, ``train.dfd_opt``)
            ``+ [d(F_s(student, x), F_s(teacher, x)) for decoder stages s]``  (ablation ``dfd_opt.decoder_stages``)
            ``+ d(student(x), teacher(x))``                              (ablation ``train.output_kd_opt``)

   with ``w`` fixed (the losses' ``loss_weight``) or learned by LMR (``train.lmr_opt``).

Checkpoints are basicsr's ``{'params': student}`` plus ``'params_teacher'`` (and ``'params_lmr'``) in the same file,
so a QAT checkpoint reloads into an identical quantized network with its teacher, and ``'options'``, the ``network_g``
and ``quant`` settings it was trained with (loading it with others is refused, :mod:`qdr_plugin.utils.checkpoint`).
At the start of QAT the FP32 network is also written to ``models/net_g_fp32.pth``. Checkpoints and training states
are written atomically, never of a diverged network, and a failed write stops the run; the training states also hold
the RNG states and LMR's optimizer, so that ``qdr_plugin.train`` resumes exactly (a changed ``train.optim_g.lr`` is
taken on resume).
Validation logs the INT8 (fake-quant) student's metrics (``psnr``) and the FP32 teacher's (``psnr_fp32``) on the
same images, and keeps the best student in ``models/net_g_best.pth``.

Distributed training (``--launcher pytorch``, see :mod:`qdr_plugin.dist`): the network is wrapped in
``DistributedDataParallel`` (CPU or CUDA) at the end of the set-up, and re-wrapped after quantization so that DDP
all-reduces the new step sizes; the calibrated student and the teacher are broadcast from rank 0, and LMR's
gradient-norm measurements are averaged over the ranks before each update. Validation runs on rank 0 only, with the
bare network (a DDP forward would broadcast buffers to ranks that are not listening).
"""

from __future__ import annotations

import errno
import math
import os
import time
import warnings
from collections.abc import Iterator
from copy import deepcopy
from functools import partial

import torch
import torch.nn.functional as F
from basicsr.losses import build_loss
from basicsr.metrics import calculate_metric
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger, tensor2img
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from qdr_plugin.core import (
    QDRStep,
    bare_state_dict,
    freeze,
    network_states,
    optimizer_groups,
    refuse_non_finite,
    start_qat,
)
from qdr_plugin.data.calibration import training_calibration_batches
from qdr_plugin.dist import wrap_ddp
from qdr_plugin.errors import UserError
from qdr_plugin.losses import LearnableMagnitudeReweighting
from qdr_plugin.prepare import prepare
from qdr_plugin.quant import QuantConfig, is_quantized, is_quantized_state_dict
from qdr_plugin.registry import register
from qdr_plugin.utils.atomic import atomic_torch_save
from qdr_plugin.utils.checkpoint import (
    RECORD_KEY,
    build_teacher,
    check_training_record,
    config_of_checkpoint,
    does_not_fit,
    read_checkpoint,
    state_dict_of,
    training_record,
)
from qdr_plugin.utils.rng import rng_state, set_rng_state

from .curriculum import Curriculum
from .train_options import DFD_KEYS, OPTIMIZERS, RELATIONAL_KEYS, check_train_options, distill_layers, relational_layers


def _loss_from_options(options: dict, ours: tuple[str, ...]) -> nn.Module:
    """A basicsr loss from an options block (checked by :func:`check_train_options`), minus our own keys."""
    return build_loss({k: v for k, v in options.items() if k not in ours})


@register(MODEL_REGISTRY)
class QDRModel(SRModel):
    """QDR quantization-aware training (see the module docstring)."""

    check_train_options = staticmethod(check_train_options)  # the train: rules, also run by the pre-flight check

    def __init__(self, opt: dict):
        self.quant_config = QuantConfig.from_options(opt.get('quant'))
        self.net_t: nn.Module | None = None
        self.lmr: LearnableMagnitudeReweighting | None = None
        self.qdr_step: QDRStep | None = None  # the QDR parts of the training step (training only)
        self._checkpoint_extras: dict[str, dict] = {}
        self._fp32_metrics: dict[str, dict[str, float]] = {}
        self._fp32_pending: dict[str, float] | None = None
        self._last_train_lq: torch.Tensor | None = None  # the input of the last update (see _refuse_diverged)
        super().__init__(opt)

    # ----------------------------------------------------------------------------------------------- loading
    def load_network(self, net: nn.Module, load_path: str, strict: bool = True, param_key: str = 'params') -> None:
        """basicsr's loader, plus: a file that is not a network checkpoint, or one trained with other ``network_g``
        / ``quant`` options, is refused by name (:class:`UserError`); a quantized checkpoint first quantizes ``net``
        so the keys match, and the checkpoint's teacher / LMR state are kept for :meth:`init_training_settings`."""
        checkpoint = read_checkpoint(load_path, 'path.pretrain_network_g', param_key)
        check_training_record(checkpoint, self.opt['network_g'], self.quant_config, load_path, self.is_train)
        state = state_dict_of(checkpoint, param_key)
        bare = self.get_bare_model(net)
        if is_quantized_state_dict(state) and not is_quantized(bare):
            network_opt = self.opt['network_g']
            prepare(bare, network_opt, config_of_checkpoint(self.quant_config, network_opt, checkpoint, state))
        self._checkpoint_extras = {k: checkpoint[k] for k in ('params_teacher', 'params_lmr') if k in checkpoint}
        try:
            super().load_network(net, load_path, strict, param_key)
        except RuntimeError as error:  # load_state_dict: missing / unexpected keys, other shapes
            raise does_not_fit('path.pretrain_network_g', load_path, self.opt['network_g'], error) from error

    # ------------------------------------------------------------------------------------------------ set-up
    def model_to_device(self, net: nn.Module) -> nn.Module:
        """basicsr's, except that in distributed training the network stays bare until :meth:`_wrap_ddp` (after the
        set-up, and again after quantization: the quantizer step sizes are new parameters DDP must know)."""
        if self.opt['dist'] and self.is_train:
            return net.to(self.device)
        if self.opt['dist']:
            return wrap_ddp(net.to(self.device), self.opt.get('find_unused_parameters', False))
        return super().model_to_device(net)

    def _wrap_ddp(self) -> None:
        if self.opt['dist']:
            net = self.get_bare_model(self.net_g)
            self.net_g = wrap_ddp(net, self.opt.get('find_unused_parameters', False))

    def init_training_settings(self) -> None:
        train_opt = self.opt['train']
        self.check_train_options(train_opt)
        self.fp32_warmup_iter = train_opt.get('fp32_warmup_iter') or 0
        self.lmr = self.curriculum = None
        if train_opt.get('curriculum'):
            if self.opt['dist']:
                raise UserError('train.curriculum freezes and unfreezes parameters between stages, which '
                                'DistributedDataParallel does not allow; train with one process (no --launcher).')
            self.curriculum = Curriculum(train_opt['curriculum'], self.get_bare_model(self.net_g))
        if train_opt.get('lmr_opt'):
            self.lmr = LearnableMagnitudeReweighting(**train_opt['lmr_opt'])
            if 'params_lmr' in self._checkpoint_extras:
                self.lmr.load_state_dict(self._checkpoint_extras['params_lmr'])
        self.qdr_step = self._build_qdr_step(train_opt)
        net = self.get_bare_model(self.net_g)
        if is_quantized(net):  # a QAT checkpoint (resume or continued training): its teacher comes with it
            if 'params_teacher' not in self._checkpoint_extras:
                raise UserError(
                    'path.pretrain_network_g is a quantized checkpoint without its FP32 teacher (params_teacher); '
                    'start QAT from the FP32 checkpoint instead (e.g. models/net_g_fp32.pth).'
                )
            teacher = build_teacher(self.opt['network_g'], self._checkpoint_extras['params_teacher'],
                                    self.quant_config.fold_bn)
            self._set_teacher(teacher.to(self.device))
        elif self.fp32_warmup_iter == 0:
            self._start_qat()
        self._wrap_ddp()
        super().init_training_settings()
        self.qdr_step.cri_pix = self.cri_pix

    def _build_qdr_step(self, train_opt: dict) -> QDRStep:
        """The core's training step from the ``train:`` losses (its ``cri_pix`` is SRModel's ``pixel_opt``, set once
        SRModel has built it)."""
        def loss(key: str, ours: tuple[str, ...]) -> nn.Module | None:
            return _loss_from_options(train_opt[key], ours) if train_opt.get(key) else None

        return QDRStep(None, loss('dfd_opt', DFD_KEYS), loss('output_kd_opt', ()),
                       loss('relational_opt', RELATIONAL_KEYS), self.lmr, train_opt.get('pixel_target', 'gt'))

    def _set_teacher(self, teacher: nn.Module) -> None:
        self.net_t = freeze(teacher)
        self.qdr_step.attach(self.get_bare_model(self.net_g), teacher, self._dfd_layers(), self._relational_layers())

    def _distill_layers(self) -> list[str]:
        """The layers DFD and the relational KD compare: ``dfd_opt``'s first (the bottleneck), then the others."""
        return list(dict.fromkeys(self._dfd_layers() + self._relational_layers()))

    def _dfd_layers(self) -> list[str]:
        dfd_opt = self.opt['train'].get('dfd_opt')
        return distill_layers(dfd_opt, self.get_bare_model(self.net_g)) if dfd_opt else []

    def _relational_layers(self) -> list[str]:
        train = self.opt['train']
        if not train.get('relational_opt'):
            return []
        return relational_layers(train['relational_opt'], train.get('dfd_opt'), self.get_bare_model(self.net_g))

    def _calibration_batches(self) -> Iterator[torch.Tensor]:
        """QAT's calibration batches: ``quant.calib_batches`` training batches of crop side ``quant.calib_size``
        (:func:`qdr_plugin.data.calibration.training_calibration_batches`, drawn as they are iterated)."""
        cfg = self.quant_config
        return training_calibration_batches(self.opt['datasets']['train'], cfg.calib_batches, cfg.calib_size,
                                            self.opt.get('manual_seed') or 0, self.device)

    def _start_qat(self, current_iter: int = 0) -> None:
        """Fold BatchNorm, snapshot the FP32 teacher, quantize and calibrate the student (:func:`prepare`)."""
        logger = get_root_logger()
        net = self.get_bare_model(self.net_g)
        cfg = self.quant_config
        started = start_qat(net, partial(prepare, network_opt=self.opt['network_g'], config=cfg),
                            self._calibration_batches())
        if current_iter > 0:
            self.save_network(started.teacher, 'net_g', 'fp32')
        self._set_teacher(started.teacher)
        if hasattr(self, 'best_metric_results'):  # the best checkpoint is the best *quantized* student
            del self.best_metric_results
        if isinstance(self.net_g, DistributedDataParallel):  # at init the net is still bare (wrapped after set-up)
            self.net_g = net
            self._wrap_ddp()  # a new DDP: it must all-reduce the step sizes too
        logger.info(f'QAT starts at iter {current_iter}: {started.calibrated} activation quantizers calibrated '
                    f'({cfg.calibration}).')

    def setup_optimizers(self) -> None:
        """One optimizer, two groups: weights (``optim_g`` as given) and step sizes (no weight decay, learning rate
        ``optim_g.lr * train.step_lr_mult``)."""
        optim_opt = deepcopy(self.opt['train']['optim_g'])
        optim_type = optim_opt.pop('type')
        groups = optimizer_groups(self.get_bare_model(self.net_g), optim_opt['lr'],
                                  self.opt['train'].get('step_lr_mult', 1.0))
        self.optimizer_g = self.get_optimizer(optim_type, groups, **optim_opt)
        self.optimizers.append(self.optimizer_g)

    def get_optimizer(self, optim_type: str, params, lr: float, **kwargs) -> torch.optim.Optimizer:
        """``train.optim_g.type`` (one of :data:`~qdr_plugin.models.train_options.OPTIMIZERS`) over ``params``."""
        return OPTIMIZERS[optim_type](params, lr, **kwargs)

    def setup_schedulers(self) -> None:
        train_opt = deepcopy(self.opt['train'])
        self.opt['train'], saved = train_opt, self.opt['train']
        try:
            super().setup_schedulers()
        finally:
            self.opt['train'] = saved

    def _restart_optimization(self, current_iter: int) -> None:
        """New optimizer and schedulers after the quantizers appear; schedulers resume at ``current_iter``."""
        self.optimizers, self.schedulers = [], []
        self.setup_optimizers()
        self.setup_schedulers()
        with warnings.catch_warnings():  # stepping a scheduler before its optimizer is the point here
            warnings.simplefilter('ignore', UserWarning)
            for scheduler in self.schedulers:
                for _ in range(current_iter - 1):
                    scheduler.step()

    # -------------------------------------------------------------------------------------------- training
    def optimize_parameters(self, current_iter: int) -> None:
        if self.net_t is None and current_iter > self.fp32_warmup_iter:
            self._start_qat(current_iter)
            self._restart_optimization(current_iter)
        if self.curriculum is not None and self.net_t is not None:
            self._enter_curriculum_stage(current_iter)
        self.optimizer_g.zero_grad()
        self._last_train_lq = self.lq
        step = self.qdr_step
        losses = step.losses(self.net_g, self.net_t, self.lq, self.gt)
        self.output = losses.output
        step.check_finite(losses, 'QDRModel', f'iter {current_iter}', _NON_FINITE_FIX)
        losses.total.backward()
        self.optimizer_g.step()
        lmr_log = step.after_update(self.get_bare_model(self.net_g), self.net_t is not None, losses.distilled)
        self.log_dict = self.reduce_loss_dict(losses.parts)
        self.log_dict.update(lmr_log)

    def _enter_curriculum_stage(self, current_iter: int) -> None:
        """Quantize and train the curriculum's stages up to this iteration's (:mod:`.curriculum`); logged on a
        change."""
        stage = self.curriculum.stage_at(current_iter, self.fp32_warmup_iter, self.opt['train']['total_iter'])
        if self.curriculum.apply(self.get_bare_model(self.net_g), stage):
            get_root_logger().info(f'Curriculum at iter {current_iter}: {self.curriculum.describe(stage)} and the '
                                   'stages before it quantized and trained, the later ones FP32 and frozen.')

    # ------------------------------------------------------------------------------------------ validation
    def _crop_to_input(self, output: torch.Tensor, height: int, width: int) -> torch.Tensor:
        scale = int(self.opt.get('scale', 1) or 1)
        return output[..., : height * scale, : width * scale]

    def test(self) -> None:
        """SRModel's test, plus: a windowed transformer (``network_g.window_size``, e.g. SwinIR) gets its input
        reflect-padded to a multiple of the window and its output cropped back, as basicsr's SwinIRModel."""
        wrapped, lq = self.net_g, self.lq
        height, width = lq.shape[-2:]
        window = getattr(self.get_bare_model(wrapped), 'window_size', None) or self.opt['network_g'].get('window_size')
        if isinstance(window, int) and window > 1:
            self.lq = F.pad(lq, (0, (-width) % window, 0, (-height) % window), mode='reflect')
        if isinstance(wrapped, DistributedDataParallel):  # rank 0 alone: a DDP forward would wait for the others
            self.net_g = wrapped.module
        try:
            super().test()
        finally:
            self.net_g = wrapped
        self.output = self._crop_to_input(self.output, height, width)
        if self._fp32_pending is not None and hasattr(self, 'gt'):
            self.net_t.eval()
            with torch.no_grad():
                fp32_out = self._crop_to_input(self.net_t(self.lq), height, width)
                fp32_img = tensor2img([fp32_out.detach().cpu()])
            metric_data = {'img': fp32_img, 'img2': tensor2img([self.gt.detach().cpu()])}
            for name, metric_opt in self.opt['val']['metrics'].items():
                self._fp32_pending[name] += calculate_metric(metric_data, metric_opt)
            self._fp32_pending['_count'] += 1
        if self.qdr_step is not None:
            self.qdr_step.discard_features()
        self.lq = lq

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img) -> None:
        name = dataloader.dataset.opt['name']
        metrics = self.opt['val'].get('metrics')
        if self.net_t is not None and metrics and name not in self._fp32_metrics:
            self._fp32_pending = dict.fromkeys([*metrics, '_count'], 0.0)  # the frozen teacher is scored once
        super().nondist_validation(dataloader, current_iter, tb_logger, save_img)

    def _log_validation_metric_values(self, current_iter, dataset_name, tb_logger) -> None:
        super()._log_validation_metric_values(current_iter, dataset_name, tb_logger)
        if self._fp32_pending is not None:
            count = max(self._fp32_pending.pop('_count'), 1)
            self._fp32_metrics[dataset_name] = {k: v / count for k, v in self._fp32_pending.items()}
            self._fp32_pending = None
        fp32 = self._fp32_metrics.get(dataset_name)
        if fp32 is not None:
            int8 = self.metric_results
            lines = [f'\t # {k}_fp32: {v:.4f}\t(INT8 - FP32: {int8[k] - v:+.4f})' for k, v in fp32.items()]
            get_root_logger().info(f'Validation {dataset_name} FP32 teacher\n' + '\n'.join(lines))
            if tb_logger:
                for k, v in fp32.items():
                    tb_logger.add_scalar(f'metrics/{dataset_name}/{k}_fp32', v, current_iter)
        self._save_best(dataset_name, current_iter)

    def _save_best(self, dataset_name: str, current_iter) -> None:
        if self.net_t is None or not isinstance(current_iter, int) or not hasattr(self, 'best_metric_results'):
            return
        first_metric = next(iter(self.best_metric_results[dataset_name].values()))
        if first_metric['iter'] == current_iter and math.isfinite(first_metric['val']):
            self._save_networks('best')

    # ------------------------------------------------------------------------------------------------ saving
    def _save_networks(self, current_iter) -> None:
        nets = network_states(self.net_g, self.net_t, self.lmr)
        self.save_network(list(nets.values()), 'net_g', current_iter, param_key=list(nets))

    def save(self, epoch: int, current_iter: int) -> None:
        """The networks and the training state, unless the network has diverged (:meth:`_refuse_diverged`)."""
        self._refuse_diverged(current_iter)
        self._save_networks(current_iter)
        self.save_training_state(epoch, current_iter)

    @master_only
    def _refuse_diverged(self, current_iter: int) -> None:
        """Raise :class:`UserError` (the non-finite guard's message) if the network's output on the last training
        batch, in eval mode, is not finite: the update just made blew the weights up (still finite numbers, but the
        next forward overflows), and a checkpoint of them would only resume into the same failure."""
        if self._last_train_lq is None:
            return
        net = self.get_bare_model(self.net_g)
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                finite = bool(torch.isfinite(net(self._last_train_lq)).all())
        finally:
            net.train(was_training)
            if self.qdr_step is not None:
                self.qdr_step.discard_features()
        if not finite:
            where = 'the last iteration' if current_iter == -1 else f'iter {current_iter}'
            raise UserError(f'QDRModel: the network diverged at {where} (its output on the last training batch holds '
                            f'NaN or inf); {_NON_FINITE_FIX}')

    @master_only
    def save_network(self, net, net_label: str, current_iter, param_key='params') -> None:
        """basicsr's ``save_network`` (file ``models/<net_label>_<iter | latest>.pth``, ``{param_key: state_dict}``
        with ``module.`` stripped), plus the training record (``options``: ``network_g`` and ``quant``, see
        :func:`qdr_plugin.utils.checkpoint.training_record`); written atomically (a crash never leaves a truncated
        file), never with non-finite weights, and a failed write stops the run (:func:`_save_or_stop`)."""
        if current_iter == -1:
            current_iter = 'latest'
        save_path = os.path.join(self.opt['path']['models'], f'{net_label}_{current_iter}.pth')
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError(f'save_network: {len(nets)} networks but {len(keys)} param keys.')
        save_dict = {}
        for net_, key in zip(nets, keys):
            state = bare_state_dict(self.get_bare_model(net_))
            refuse_non_finite(state, key, os.path.basename(save_path), 'QDRModel', _NON_FINITE_FIX)
            save_dict[key] = state
        save_dict[RECORD_KEY] = training_record(self.opt['network_g'], self.quant_config)
        _save_or_stop(save_dict, save_path, 'network')

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """basicsr's training state (epoch, iter, optimizers, schedulers) plus everything else that steers training:
        ``rng`` (python / numpy / torch RNG states), ``lmr_optimizer`` (LMR's own Adam) and
        ``best_metric_results``, and the experiment's ``name``; written atomically, loadable with
        ``torch.load(..., weights_only=True)``."""
        if current_iter == -1:
            return
        state = {
            'name': self.opt['name'],
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'rng': rng_state(),
        }
        if self.lmr is not None:
            state['lmr_optimizer'] = self.lmr.optimizer.state_dict()
        if hasattr(self, 'best_metric_results'):
            state['best_metric_results'] = {
                dataset: {
                    metric: {'better': str(r['better']), 'val': float(r['val']), 'iter': int(r['iter'])}
                    for metric, r in record.items()
                }
                for dataset, record in self.best_metric_results.items()
            }
        save_path = os.path.join(self.opt['path']['training_states'], f'{current_iter}.state')
        _save_or_stop(state, save_path, 'training state')

    def resume_training(self, resume_state: dict) -> None:
        """basicsr's (optimizers, schedulers), plus the LMR optimizer, the best-metric records and the RNG states.

        The network, its quantizer step sizes, the teacher (QAT started or not) and the LMR weights come from the
        ``net_g_<iter>.pth`` that ``check_resume`` sets as ``path.pretrain_network_g``. Resumed before
        ``fp32_warmup_iter`` the model is still FP32 and switches to QAT at the same iteration as an uninterrupted
        run; resumed after it, the model is already quantized and the optimizer (with its step-size group) and
        schedulers are loaded, not restarted.
        """
        saved_optimizers = resume_state['optimizers']
        if len(saved_optimizers) != len(self.optimizers):
            raise UserError(
                f'The training state (iter {resume_state["iter"]}) has {len(saved_optimizers)} optimizers, the model '
                f'{len(self.optimizers)}: resume it with the options of the run that saved it.'
            )
        for i, (saved, optimizer) in enumerate(zip(saved_optimizers, self.optimizers)):
            if len(saved['param_groups']) != len(optimizer.param_groups):
                raise UserError(
                    f'Optimizer {i} of the training state (iter {resume_state["iter"]}) has '
                    f'{len(saved["param_groups"])} parameter groups but the model has {len(optimizer.param_groups)} '
                    '(2 once QAT has started: weights + quantizer step sizes). Resume with the network checkpoint '
                    'saved together with the state (models/net_g_<iter>.pth, not ignore_resume_networks).'
                )
        super().resume_training(resume_state)
        self._take_learning_rate_from_options()
        if self.lmr is not None:
            if 'lmr_optimizer' in resume_state:
                self.lmr.optimizer.load_state_dict(resume_state['lmr_optimizer'])
            else:
                get_root_logger().warning("The training state has no lmr_optimizer: LMR's Adam restarts from zero.")
        if 'best_metric_results' in resume_state:
            self.best_metric_results = deepcopy(resume_state['best_metric_results'])
        if 'rng' in resume_state:
            set_rng_state(resume_state['rng'])

    def _take_learning_rate_from_options(self) -> None:
        """After a resume: if ``train.optim_g.lr`` differs from the learning rate the run started with, every group
        of the optimizer starts from the new one, and its current rate and the schedulers' base rates are scaled by
        new / old (the schedule goes on where it was); logged. With the same value nothing changes (exact resume)."""
        new = float(self.opt['train']['optim_g']['lr'])
        groups = self.optimizer_g.param_groups
        old = groups[0].get('initial_lr', groups[0]['lr'])
        if old == new:
            return
        mults = [1.0, self.opt['train'].get('step_lr_mult', 1.0)][:len(groups)]
        for group, mult in zip(groups, mults):
            group['lr'] *= new * mult / group.get('initial_lr', group['lr'])
            group['initial_lr'] = new * mult
        for scheduler in self.schedulers:
            if scheduler.optimizer is self.optimizer_g:
                scheduler.base_lrs = [new * mult for mult in mults]
                scheduler._last_lr = [group['lr'] for group in groups]
        get_root_logger().info(f'train.optim_g.lr changed from {old:g} to {new:g} on resume: the learning rate is '
                               f'now {groups[0]["lr"]:g}, the schedule goes on from where it was.')


_NON_FINITE_FIX = ('nothing was saved for this iteration, the last checkpoint is still good: lower train.optim_g.lr '
                   'and resume with --auto_resume (the resumed run takes the new learning rate), or check the '
                   'training images.')

_NOT_RETRIED = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
"""Write errors that a second attempt will not cure: the run stops at once."""


def _mount_point(path: str) -> str:
    """The mount point of the file system that holds ``path``."""
    path = os.path.dirname(os.path.abspath(path))
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def _save_failure(what: str, save_path: str, error: OSError) -> str:
    """The one-line message of a failed save: what, where, the OS error, the fix."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        mount = _mount_point(save_path)
        reason, fix = f'no space left on {mount} ({error.strerror})', f'free space on {mount}'
    elif error.errno == errno.EFBIG:
        reason = f'{error.strerror} (errno {error.errno}: a file size limit of the process or the file system)'
        fix = 'lift the limit (ulimit -f) or train in another folder'
    else:
        reason, fix = f'{error.strerror or error} (errno {error.errno})', 'fix that'
    return (f'could not save the {what} {save_path}: {reason}; the run stopped, its last saved checkpoint is kept: '
            f'{fix} and resume with --auto_resume.')


def _save_or_stop(obj, save_path: str, what: str, retries: int = 3) -> None:
    """:func:`atomic_torch_save`; an OS error is tried again (3 attempts, as basicsr), except a full disk or a file
    size limit, and then stops the run with :class:`UserError`. The previous file at ``save_path``, if any, is kept
    intact, and no partial file is left."""
    logger = get_root_logger()
    for attempt in range(retries, 0, -1):
        try:
            atomic_torch_save(obj, save_path)
            return
        except OSError as error:
            if attempt == 1 or error.errno in _NOT_RETRIED:
                raise UserError(_save_failure(what, save_path, error)) from error
            logger.warning(f'Save {what} error: {error}, remaining retry times: {attempt - 1}')
            time.sleep(1)
