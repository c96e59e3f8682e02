# POMP on the full ImageNet-21K (fall11, 21,841 classes): one folder per wnid under data_root.
# n_ctx 16, 20 epochs (Dassl schedule) as the official n_ctx 16 prompt; no official fall11 run.
_base_ = ['./pomp_in21k-p_vit-b16_ctx16_ep20.py']

data_root = 'data/imagenet21k'
model = dict(vocabulary='imagenet21k')
train_dataloader = dict(
    dataset=dict(data_root=data_root, layout='fall11',
                 split_file=data_root + '/split_16shots_seed1.json'))
