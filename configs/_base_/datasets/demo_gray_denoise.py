# The demo images committed in datasets/demo (as options/qdr_denoise.yml).
_base_ = ['gray_denoise_pipelines.py']
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='RepeatDataset', times=50,
                 dataset=dict(type='ImageFolderDataset', gt_folder='datasets/demo/train',
                              pipeline={{_base_.train_pipeline}})),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageFolderDataset', gt_folder='datasets/demo/val', pipeline={{_base_.val_pipeline}},
                 test_mode=True),
)
test_dataloader = val_dataloader
