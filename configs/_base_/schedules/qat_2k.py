# The demo's schedule: 2000 iterations (FP32 warm-up then QAT, model.train.fp32_warmup_iter), Adam 1e-3,
# x0.3 at 900 and 1700, validation every 400.
train_cfg = dict(type='QDRIterBasedTrainLoop', max_iters=2000, val_interval=400)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    constructor='QDROptimWrapperConstructor',
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=1e-3, betas=(0.9, 0.999)),
)
param_scheduler = dict(type='MultiStepLR', milestones=[900, 1700], gamma=0.3, by_epoch=False)
