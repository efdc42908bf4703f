# Train400 (training crops of 64, flips, fresh sigma-25 noise each draw) and BSD68 (the plugin's fixed sigma-25
# noise of each image), gray, from ../shared/datasets as in options/qdr_denoise_bsd68.yml.
sigma = 25
train_pipeline = [
    dict(type='LoadImage', key='gt', channels=1),
    dict(type='PairedRandomCrop', gt_size=64, keys=['gt']),
    dict(type='Flip', keys=['gt'], hflip=True, rotation=True),
    dict(type='AddGaussianNoise', sigma=sigma),
    dict(type='PackInputs'),
]
val_pipeline = [
    dict(type='LoadImage', key='gt', channels=1),
    dict(type='AddGaussianNoise', sigma=sigma, seeded=True),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='RepeatDataset', times=20,
                 dataset=dict(type='ImageFolderDataset', gt_folder='../shared/datasets/Train400',
                              pipeline=train_pipeline)),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageFolderDataset', gt_folder='../shared/datasets/BSD68', pipeline=val_pipeline,
                 test_mode=True),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='QDRMetric', crop_border=0)
test_evaluator = val_evaluator
