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
from basicsr.utils.options import copy_opt_file, dict2str, parse_options

from qdr_plugin.dist import use_in_basicsr
from qdr_plugin.utils.rng import rng_preserved

__all__ = ['load_resume_state', 'train_pipeline']

_STATE_NAME = re.compile(r'^(\d+)\.state$')


def load_resume_state(opt: dict) -> dict | None:
    """The training state to resume from (``--auto_resume``: the latest in ``opt['path']['training_states']``, else
    ``path.resume_state``), or None; on CPU when ``num_gpu`` is 0 or CUDA is unavailable. Like basicsr's, it points
    ``path.pretrain_network_*`` at the ``models/net_*_<iter>.pth`` saved with the state (``check_resume``)."""
    resume_state_path = None
    if opt['auto_resume']:
        state_path = opt['path']['training_states']
        if osp.isdir(state_path):
            names = scandir(state_path, suffix='.state', recursive=False, full_path=False)
            iters = [int(m.group(1)) for m in map(_STATE_NAME.match, names) if m]
            if iters:
                resume_state_path = osp.join(state_path, f'{max(iters)}.state')
                opt['path']['resume_state'] = resume_state_path
    else:
        resume_state_path = opt['path'].get('resume_state')

    if resume_state_path is None:
        return None
    if opt['num_gpu'] == 0 or not torch.cuda.is_available():
        map_location = torch.device('cpu')
    else:
        map_location = torch.device('cuda', torch.cuda.current_device())
    resume_state = torch.load(resume_state_path, map_location=map_location, weights_only=True)
    check_resume(opt, resume_state['iter'])
    return resume_state


def train_pipeline(root_path: str) -> None:
    """basicsr's ``train_pipeline`` with the exact, CPU-safe resume described in the module docstring."""
    use_in_basicsr()  # parse_options' init_dist -> qdr_plugin.dist.init_dist (gloo on CPU, NCCL with CUDA)
    opt, args = parse_options(root_path, is_train=True)
    opt['root_path'] = root_path

    torch.backends.cudnn.benchmark = True

    resume_state = load_resume_state(opt)
    if resume_state is None:
        make_exp_dirs(opt)
        if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
            mkdir_and_rename(osp.join(opt['root_path'], 'tb_logger', opt['name']))

    copy_opt_file(args.opt, opt['path']['experiments_root'])

    # get_root_logger must not be called before this point (the logger would not get its file)
    log_file = osp.join(opt['path']['log'], f'train_{opt["name"]}_{get_time_str()}.log')
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))
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
