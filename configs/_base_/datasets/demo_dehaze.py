# The dehazing task on the committed demo images (as options/tasks/dehaze.yml): synthetic haze on clean crops for
# training, real hazy / clear pairs for validation, both through the plugin's basicsr datasets (BasicSRDataset);
# training batches in basicsr's data order (dataset_enlarge_ratio 100).
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    drop_last=True,
    sampler=dict(type='EnlargedSampler', ratio=100),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='BasicSRDataset', opt=dict(
        type='SyntheticHazeDataset', dataroot_gt='datasets/demo_tasks/train', gt_size=64, use_hflip=True,
        use_rot=True)),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='BasicSRDataset', test_mode=True, opt=dict(
        type='PairedFolderDataset', dataroot_lq='datasets/demo_tasks/haze/hazy',
        dataroot_gt='datasets/demo_tasks/haze/clear', pairing=dict(lq='{scene}_{level}', gt='{scene}'))),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='QDRMetric', crop_border=0)
test_evaluator = val_evaluator
