# The demo images committed in datasets/demo (as options/qdr_denoise.yml), in basicsr's data order: the YAML's
# training set (BasicSRDataset), its EnlargedSampler (dataset_enlarge_ratio 50) and loader (batches of 8, the last
# incomplete batch of an epoch dropped), so the same seed draws the batches of `basicsr train`.
_base_ = ['gray_denoise_val.py']
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    drop_last=True,
    sampler=dict(type='EnlargedSampler', ratio=50),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='BasicSRDataset', opt=dict(
        type='GaussianNoiseDataset', dataroot_gt='datasets/demo/train', in_ch=1, sigma=25, gt_size=64,
        use_hflip=True, use_rot=True)),
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
