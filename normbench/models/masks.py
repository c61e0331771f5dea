"""The batch mask convention: a model takes a boolean mask of shape (batch,) marking real examples, and hands
each norm that mask shaped to broadcast against the norm's input."""


def batch_mask(mask, x):
    return None if mask is None else mask.reshape((x.shape[0],) + (1,) * (x.ndim - 1))
