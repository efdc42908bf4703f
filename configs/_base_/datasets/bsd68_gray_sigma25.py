# Train400 -> BSD68 from ../shared/datasets (as options/qdr_denoise_bsd68.yml): the demo's pipelines and loaders
# on other folders, batches of 16.
_base_ = ['demo_gray_denoise.py']
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(times=20, dataset=dict(gt_folder='../shared/datasets/Train400')),
)
val_dataloader = dict(dataset=dict(gt_folder='../shared/datasets/BSD68'))
test_dataloader = val_dataloader
