# The official POMP training step (amazon-science/prompt-pretraining, trainers/pomp.py at 871ef33:
# CustomCLIP.forward with EPT, random negative sampling, LOCAL_CORRECTION) in the official n_ctx 4 /
# 5 epoch recipe (configs/trainers/POMP/vit_b16_ep5_randaug2.yaml, scripts/pomp/main.sh
# imagenet_21k vit_b16_ep5_randaug2 end 4 16 False 1000, seed 42). What differs from our default
# recipe, and which config gives which: docs/pretraining.md, "Official recipe".
_base_ = ['./pomp_in21k-p_vit-b16.py']

model = dict(
    contrast='per_image',        # a row is [own class, K - 1 negatives drawn from all N]
    correction='log10',          # the official margin: log10(N - 1) - log10(kept negatives)
    mask_duplicate_names=False,  # twins stay in each other's rows, as in the official code
    num_sampled=1000,            # UPDATE_CLASS_NUM
    seed=42)
data_root = 'data/imagenet21k_resized'
# the official dataset draws the 16 shots with the run's seed (SEED 42)
train_dataloader = dict(dataset=dict(seed=42, split_file=data_root + '/split_16shots_seed42.json'))
randomness = dict(seed=42)
