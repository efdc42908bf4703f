# The dehazing task: EFM colour network, synthetic haze for training, the committed hazy / clear pairs for
# validation; the mmengine twin of options/tasks/dehaze.yml.
#   python -m qdr_plugin.mm train configs/qdr_efm_dehaze_demo.py
_base_ = [
    '_base_/datasets/demo_dehaze.py',
    '_base_/schedules/qat_2k.py',
    '_base_/default_runtime.py',
]

model = dict(
    type='QDRRestorer',
    network_g=dict(type='EFM', in_ch=3, width=32, depth=2, stem='unshuffle', up='deconv'),
    quant=dict(bits=8, act_symmetric=True, unsigned_relu=True, keep_fp32=[], calibration='percentile',
               calib_batches=4),
    train=dict(
        fp32_warmup_iter=300,
        pixel_opt=dict(type='L1Loss', loss_weight=1.0),
        dfd_opt=dict(type='L1Loss', loss_weight=1.0),
        lmr_opt=dict(type='gradnorm', lr=0.025),
    ),
)
train_cfg = dict(max_iters=500, val_interval=500)
param_scheduler = dict(milestones=[250, 400])
default_hooks = dict(checkpoint=dict(interval=500))
