# The CoOp-on-ImageNet-1K baseline of the synthetic world: the same prompt (n_ctx 4, random
# init), CLIP and schedule as pomp_synthetic.py, trained with a full softmax over the
# 1,000-class subset 'synthetic-1k' (16 shots: about as many images as POMP's 1-shot 23,900).
#   python tools/synthetic/world.py render-pretrain --out work_dirs/world/coop --classes coop \
#       --shots 16
_base_ = ['./pomp_synthetic.py']

data_root = 'work_dirs/world/coop'
feature_dir = data_root + '/features'
model = dict(vocabulary='synthetic-1k', num_sampled=None, correction='none')
train_dataloader = dict(dataset=dict(source=data_root + '/train.csv', vocabulary='synthetic-1k'))
