# Train400 -> BSD68 from ../shared/datasets (as options/qdr_denoise_bsd68.yml): the demo's data order and loaders
# on other folders, dataset_enlarge_ratio 20, batches of 16, one data-loader worker.
_base_ = ['demo_gray_denoise.py']
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    sampler=dict(ratio=20),
    dataset=dict(opt=dict(dataroot_gt='../shared/datasets/Train400')),
)
val_dataloader = dict(dataset=dict(gt_folder='../shared/datasets/BSD68'))
test_dataloader = val_dataloader
