# Runtime of every QDR config: the plugin's registries, the QAT switch hook, logging and checkpoints in work_dirs/.
default_scope = 'qdr_plugin'
custom_imports = dict(imports=['qdr_plugin.mm'], allow_failed_imports=False)

randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'), dist_cfg=dict(backend='gloo'))
# scoped: mmengine's Runner looks the wrapper type up without the default scope
model_wrapper_cfg = dict(type='qdr_plugin.QDRDistributedDataParallel', broadcast_buffers=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1000, by_epoch=False, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
custom_hooks = [dict(type='QATSwitchHook')]
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
