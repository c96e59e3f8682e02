# CoOp-style baseline for comparison: the same prompt and data, but a full softmax over all
# 10,450 classes every step (no sampling, no correction). Needs far more memory and time.
# n_ctx 4, 5 epochs, the same Dassl schedule as the POMP config it inherits.
_base_ = ['./pomp_in21k-p_vit-b16.py']

model = dict(num_sampled=None, correction='none')
