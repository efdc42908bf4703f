# Gray Gaussian denoising at sigma 25: training crops of 64 with flips and a fresh noise draw each time (as
# GaussianNoiseDataset draws them), validation with the plugin's fixed noise of each image.
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
val_evaluator = dict(type='QDRMetric', crop_border=0)
test_evaluator = val_evaluator
