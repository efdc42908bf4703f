"""basicsr's training loop with a resume that works on CPU and continues exactly where the interrupted run was.

:func:`train_pipeline` is ``basicsr.train.train_pipeline`` (basicsr 1.4.2, its helpers imported from there) with
these changes:

* :func:`load_resume_state` loads the training state on the CPU when ``num_gpu`` is 0 or CUDA is unavailable
  (basicsr always maps it to CUDA), with ``weights_only=True``, and ``--auto_resume`` looks for states in
  ``<root_path>/experiments/<name>/training_states`` (basicsr: relative to the current directory).
* The resumed run continues at the saved position of the data order: basicsr restarts the saved epoch from its
  first batch, so a state saved at the end of an epoch replays that epoch. Here the epoch and the batch inside it
  come from the iteration (``divmod(iter, len(train_loader))``); in the middle of an epoch its first batches are
  loaded and dropped, with the RNG states put back afterwards.
* The model's ``resume_training`` runs after the data prefetcher is created, so RNG states it restores (QDRModel
  saves them, see :func:`qdr_plugin.utils.rng.rng_state`) are not consumed by the prefetcher's set-up; and
  validation during training leaves the RNG states as it found them (creating a val loader iterator draws from
  torch's RNG, and the state saved just before a validation must equal the one the training continues with).

Exactness (N iterations straight == N/2, resume, N/2, bit for bit on CPU) holds with the default prefetcher
(``prefetch_mode`` unset) and ``num_worker_per_gpu: 0``. With data-loader workers it holds when the state was saved
at an epoch boundary (``save_checkpoint_freq`` a multiple of the iterations per epoch, ``len(dataset) *
dataset_enlarge_ratio / batch_size``); in the middle of an epoch the batch order is the same but the workers' random
augmentations differ. ``prefetch_mode: cpu`` (background thread) and ``cuda`` are not exact.

``--launcher pytorch`` (torchrun) uses :func:`qdr_plugin.dist.init_dist` (gloo without CUDA, NCCL with it) instead
of basicsr's CUDA-only one: ``basicsr.utils.options.init_dist`` is rebound before ``parse_options`` runs.

Safety around the experiment folder and the resume:

* A run holds the lock of its experiment folder (:class:`qdr_plugin.utils.run_lock.RunLock`, ``.lock``) from its
  set-up to its end (rank 0 for several processes). A second run with the same ``name`` is refused before it moves
  (archives) the folder of the live one, and so is a resume of a live run; a lock left by a run that died is taken
  over, with a line in the log.
* A training state that is not one (a network checkpoint, an unreadable file), that was saved by another experiment
  (another ``name``), or whose networks (``models/net_*_<iter>.pth``) are missing is refused with one line. Under
  ``--auto_resume`` such a latest state is skipped for the one before it, and the log says so.
"""

from __future__ import annotations

import datetime
import logging
import re
import time
from os import path as osp

import torch
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
from basicsr.models import build_model
from basicsr.train import create_train_val_dataloader, init_tb_loggers
from basicsr.utils import (
    AvgTimer,
    MessageLogger,
    check_resume,
    get_env_info,
    get_root_logger,
    get_time_str,
    make_exp_dirs,
    mkdir_and_rename,
    scandir,
)
from basicsr.utils import logger as basicsr_logger
from basicsr.utils.options import copy_opt_file, dict2str, parse_options

from qdr_plugin.dist import use_in_basicsr
from qdr_plugin.errors import UserError
from qdr_plugin.utils.checkpoint import why_unreadable
from qdr_plugin.utils.rng import rng_preserved
from qdr_plugin.utils.run_lock import RunLock, setup_serialized

__all__ = ['load_resume_state', 'train_pipeline']

_STATE_NAME = re.compile(r'^(\d+)\.state$')


def _map_location(opt: dict) -> torch.device:
    """Where a training state is loaded: the CPU when ``num_gpu`` is 0 or CUDA is unavailable."""
    if opt['num_gpu'] == 0 or not torch.cuda.is_available():
        return torch.device('cpu')
    return torch.device('cuda', torch.cuda.current_device())


def _network_files(opt: dict, resume_iter: int) -> list[str]:
    """The ``models/net_*_<iter>.pth`` files ``check_resume`` makes a resume load (one per ``network_*``)."""
    ignored = opt['path'].get('ignore_resume_networks') or []
    return [osp.join(opt['path']['models'], f"net_{key.replace('network_', '')}_{resume_iter}.pth")
            for key in opt if key.startswith('network_') and key not in ignored]


class _UnusableState(Exception):
    """Why a training state cannot be resumed from (``problem``, worded to follow its path) and the ``fix``."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.problem, self.fix = problem, fix


def _read_training_state(opt: dict, path: str, own: bool) -> dict:
    """The training state at ``path``, checked with the networks saved with it; :class:`_UnusableState` if it cannot
    be read, is not a training state, was saved by another experiment (checked unless ``own``: a state found in the
    experiment's own folder), or its networks are missing or unreadable."""
    try:
        state = torch.load(path, map_location=_map_location(opt), weights_only=True)
    except Exception as error:  # noqa: BLE001  (torch.load raises many types for a bad file)
        raise _UnusableState(f'cannot be read ({why_unreadable(path, error)})',
                             'give a training_states/<iter>.state file of this experiment') from error
    if not isinstance(state, dict) or not {'iter', 'optimizers', 'schedulers'} <= set(state):
        kind = 'a network checkpoint' if isinstance(state, dict) and 'params' in state else 'something else'
        raise _UnusableState(f'is not a training state (it is {kind})',
                             'give a training_states/<iter>.state file, or give a network as path.pretrain_network_g')
    name = state.get('name')
    if not own and name is not None and name != opt['name']:
        raise _UnusableState(f"was saved by the experiment '{name}', not by '{opt['name']}'",
                             f'set name: {name} to resume it, or start this run from its network with '
                             'path.pretrain_network_g')
    for network in _network_files(opt, state['iter']):
        try:
            torch.load(network, map_location='cpu', weights_only=True)
        except FileNotFoundError:
            raise _UnusableState(f'needs the network saved with it, {network}, which does not exist',
                                 'resume from a state whose models/net_g_<iter>.pth is there') from None
        except Exception as error:  # noqa: BLE001
            raise _UnusableState(f'needs the network saved with it, {network}, which cannot be read '
                                 f'({why_unreadable(network, error)})',
                                 'resume from a state whose models/net_g_<iter>.pth is intact') from error
    return state


def _state_iters(state_path: str) -> list[int]:
    """The iterations of the ``<iter>.state`` files in ``state_path``, latest first."""
    if not osp.isdir(state_path):
        return []
    names = scandir(state_path, suffix='.state', recursive=False, full_path=False)
    return sorted((int(m.group(1)) for m in map(_STATE_NAME.match, names) if m), reverse=True)


def _latest_usable_state(opt: dict, notes: list[str]) -> tuple[str, dict] | None:
    """``--auto_resume``: the latest training state that :func:`_read_training_state` accepts, with its path, or
    ``None`` when there are no states; each state skipped adds a line to ``notes``. :class:`UserError` when there
    are states but none is usable."""
    state_path = opt['path']['training_states']
    iters = _state_iters(state_path)
    latest = None
    for resume_iter in iters:
        path = osp.join(state_path, f'{resume_iter}.state')
        try:
            return path, _read_training_state(opt, path, own=True)
        except _UnusableState as unusable:
            latest = latest or f'{path} {unusable.problem}'
            notes.append(f'--auto_resume skipped the training state {path}: it {unusable.problem}.')
    if iters:
        raise UserError(f'--auto_resume found no usable training state in {state_path} ({len(iters)} tried; the '
                        f'latest, {latest}): remove the broken states, or start afresh without --auto_resume.')
    return None


def load_resume_state(opt: dict) -> tuple[dict | None, list[str]]:
    """The training state to resume from (``--auto_resume``: the latest usable one in
    ``opt['path']['training_states']``, else ``path.resume_state``), or None, and the lines to log about states that
    ``--auto_resume`` skipped (a corrupt latest state falls back to the one before it). Loaded on CPU when
    ``num_gpu`` is 0 or CUDA is unavailable. Like basicsr's, it points ``path.pretrain_network_*`` at the
    ``models/net_*_<iter>.pth`` saved with the state (``check_resume``)."""
    notes: list[str] = []
    if opt['auto_resume']:
        found = _latest_usable_state(opt, notes)
        if found is None:
            return None, notes
        opt['path']['resume_state'], resume_state = found
        if notes:
            notes.append(f'--auto_resume resumes from {found[0]} instead.')
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
        try:
            resume_state = _read_training_state(opt, path, own=False)
        except _UnusableState as unusable:
            raise UserError(f'path.resume_state {path} {unusable.problem}: {unusable.fix}.') from unusable
    else:
        return None, notes
    check_resume(opt, resume_state['iter'])
    return resume_state, notes


def _claim_experiment(opt: dict) -> tuple[dict | None, list[str], RunLock | None]:
    """Rank 0's set-up of the experiment folder, one run at a time (:func:`setup_serialized`): refuse if a live run
    holds it, read the resume state, make (archive) the folders of a fresh run, and take the folder's lock. Returns
    the resume state, the lines to log, and the lock (``None`` on the other ranks, which only read the state)."""
    if opt['rank'] != 0:
        resume_state, notes = load_resume_state(opt)
        return resume_state, notes, None
    root = opt['path']['experiments_root']
    resuming = bool(opt['auto_resume'] or opt['path'].get('resume_state'))
    fix = ('wait until it ends, then resume it' if resuming else
           f'give this run another name than {opt["name"]!r}, or wait until that run ends')
    with setup_serialized(osp.dirname(root)):
        stale = RunLock.check_free(root, fix)
        resume_state, notes = load_resume_state(opt)
        if resume_state is None:
            make_exp_dirs(opt)
            if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name']:
                mkdir_and_rename(osp.join(opt['root_path'], 'tb_logger', opt['name']))
        lock = RunLock.claim(root, fix)
    stale = lock.stale or stale
    if stale:
        notes.insert(0, f'Took over the lock of {root} left by a run that is no longer running ({stale}).')
    return resume_state, notes, lock


def _root_logger(log_file: str) -> logging.Logger:
    """basicsr's root logger, writing to ``log_file``. basicsr sets its logger up once per process; a run after
    another in the same process (a notebook, the tests) gets its own log file and the current ``stderr``."""
    logger = logging.getLogger('basicsr')
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    basicsr_logger.initialized_logger.pop('basicsr', None)
    return get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)


def train_pipeline(root_path: str) -> None:
    """basicsr's ``train_pipeline`` with the exact, CPU-safe resume described in the module docstring."""
    use_in_basicsr()  # parse_options' init_dist -> qdr_plugin.dist.init_dist (gloo on CPU, NCCL with CUDA)
    opt, args = parse_options(root_path, is_train=True)
    opt['root_path'] = root_path

    torch.backends.cudnn.benchmark = True

    resume_state, notes, lock = _claim_experiment(opt)
    try:
        _train(opt, args, resume_state, notes)
    finally:
        if lock is not None:
            lock.release()


def _train(opt: dict, args, resume_state: dict | None, notes: list[str]) -> None:
    """The training of :func:`train_pipeline` once the experiment folder is set up (``notes``: lines to log)."""
    copy_opt_file(args.opt, opt['path']['experiments_root'])

    # get_root_logger must not be called before this point (the logger would not get its file)
    logger = _root_logger(osp.join(opt['path']['log'], f'train_{opt["name"]}_{get_time_str()}.log'))
    logger.info(get_env_info())
    logger.info(dict2str(opt))
    for note in notes:
        logger.warning(note)
    tb_logger = init_tb_loggers(opt)

    result = create_train_val_dataloader(opt, logger)
    train_loader, train_sampler, val_loaders, total_epochs, total_iters = result

    model = build_model(opt)

    prefetch_mode = opt['datasets']['train'].get('prefetch_mode')
    if prefetch_mode is None or prefetch_mode == 'cpu':
        prefetcher = CPUPrefetcher(train_loader)
    elif prefetch_mode == 'cuda':
        prefetcher = CUDAPrefetcher(train_loader, opt)
        logger.info(f'Use {prefetch_mode} prefetch dataloader')
        if opt['datasets']['train'].get('pin_memory') is not True:
            raise ValueError('Please set pin_memory=True for CUDAPrefetcher.')
    else:
        raise ValueError(f"Wrong prefetch_mode {prefetch_mode}. Supported ones are: None, 'cuda', 'cpu'.")

    skip = 0  # batches of the first epoch already used before the resume
    if resume_state:
        model.resume_training(resume_state)  # optimizers, schedulers (and for QDRModel: LMR optimizer, RNG states)
        current_iter = resume_state['iter']
        start_epoch, skip = divmod(current_iter, max(len(train_loader), 1))
        logger.info(f'Resuming training from epoch: {resume_state["epoch"]}, iter: {current_iter}.')
        if skip:
            logger.info(f'Resuming in the middle of epoch {start_epoch}: its first {skip} batches are skipped.')
    else:
        start_epoch = 0
        current_iter = 0

    msg_logger = MessageLogger(opt, current_iter, tb_logger)

    logger.info(f'Start training from epoch: {start_epoch}, iter: {current_iter}')
    data_timer, iter_timer = AvgTimer(), AvgTimer()
    start_time = time.time()

    for epoch in range(start_epoch, total_epochs + 1):
        train_sampler.set_epoch(epoch)
        if skip:
            with rng_preserved():  # the random draws of the skipped batches were made before the state was saved
                prefetcher.reset()
                for _ in range(skip):
                    prefetcher.next()
            skip = 0
        else:
            prefetcher.reset()
        train_data = prefetcher.next()

        while train_data is not None:
            data_timer.record()

            current_iter += 1
            if current_iter > total_iters:
                break
            model.update_learning_rate(current_iter, warmup_iter=opt['train'].get('warmup_iter', -1))
            model.feed_data(train_data)
            model.optimize_parameters(current_iter)
            iter_timer.record()
            if current_iter == 1:
                msg_logger.reset_start_time()
            if current_iter % opt['logger']['print_freq'] == 0:
                log_vars = {'epoch': epoch, 'iter': current_iter}
                log_vars.update({'lrs': model.get_current_learning_rate()})
                log_vars.update({'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time()})
                log_vars.update(model.get_current_log())
                msg_logger(log_vars)

            if current_iter % opt['logger']['save_checkpoint_freq'] == 0:
                logger.info('Saving models and training states.')
                model.save(epoch, current_iter)

            if opt.get('val') is not None and (current_iter % opt['val']['val_freq'] == 0):
                if len(val_loaders) > 1:
                    logger.warning('Multiple validation datasets are *only* supported by SRModel.')
                with rng_preserved():  # iterating a val loader draws from torch's RNG; a resumed run skips this
                    for val_loader in val_loaders:
                        model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])

            data_timer.start()
            iter_timer.start()
            train_data = prefetcher.next()

    consumed_time = str(datetime.timedelta(seconds=int(time.time() - start_time)))
    logger.info(f'End of training. Time consumed: {consumed_time}')
    logger.info('Save the latest model.')
    model.save(epoch=-1, current_iter=-1)  # -1 stands for the latest
    if opt.get('val') is not None:
        for val_loader in val_loaders:
            model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])
    if tb_logger:
        tb_logger.close()
