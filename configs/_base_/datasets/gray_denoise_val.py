# Gray Gaussian denoising at sigma 25: validation with the plugin's fixed noise of each image (as
# GaussianNoiseDataset validates).
sigma = 25
val_pipeline = [
    dict(type='LoadImage', key='gt', channels=1),
    dict(type='AddGaussianNoise', sigma=sigma, seeded=True),
    dict(type='PackInputs'),
]
val_evaluator = dict(type='QDRMetric', crop_border=0)
test_evaluator = val_evaluator
