# EFM gray denoiser, sigma 25: Train400 -> BSD68, the mmengine twin of options/qdr_denoise_bsd68.yml.
# FP32 for 4000 iterations, then QAT with FP32 self-distillation, DFD and LMR up to 5500.
#   python -m qdr_plugin.mm train configs/qdr_efm_denoise_bsd68.py
_base_ = [
    '_base_/models/qdr_efm.py',
    '_base_/datasets/bsd68_gray_sigma25.py',
    '_base_/schedules/qat_2k.py',
    '_base_/default_runtime.py',
]

model = dict(quant=dict(calib_batches=8), train=dict(fp32_warmup_iter=4000, lmr_opt=dict(lr=0.025)))
train_cfg = dict(max_iters=5500, val_interval=1000)
param_scheduler = dict(milestones=[2500, 3500, 4800])
default_hooks = dict(logger=dict(interval=100))
