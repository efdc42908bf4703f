# The dehazing task: EFM colour network, synthetic haze for training, the committed hazy / clear pairs for
# validation; the mmengine twin of options/tasks/dehaze.yml.
#   python -m qdr_plugin.mm train configs/qdr_efm_dehaze_demo.py
_base_ = [
    '_base_/models/qdr_efm.py',
    '_base_/datasets/demo_dehaze.py',
    '_base_/schedules/qat_2k.py',
    '_base_/default_runtime.py',
]

model = dict(network_g=dict(in_ch=3), quant=dict(unsigned_relu=True),
             train=dict(fp32_warmup_iter=300, lmr_opt=dict(lr=0.025)))
train_cfg = dict(max_iters=500, val_interval=500)
param_scheduler = dict(milestones=[250, 400])
default_hooks = dict(checkpoint=dict(interval=500))
