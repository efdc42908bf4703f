# The demo images committed in datasets/demo: gray, sigma 25; training crops of 64 with flips, fresh noise each
# draw; validation with the plugin's fixed noise of each image (the same images as options/qdr_denoise.yml).
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
    batch_size=8,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='RepeatDataset', times=50,
                 dataset=dict(type='ImageFolderDataset', gt_folder='datasets/demo/train', pipeline=train_pipeline)),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageFolderDataset', gt_folder='datasets/demo/val', pipeline=val_pipeline, test_mode=True),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='QDRMetric', crop_border=0)
test_evaluator = val_evaluator
