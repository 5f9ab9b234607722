"""PLACEHOLDER: being written; replace this whole file."""

def LRRangeTestResult(*args, **kwargs):  # placeholder
    raise NotImplementedError

def lr_range_test(*args, **kwargs):  # placeholder
    raise NotImplementedError

def plot_lr_range_test(*args, **kwargs):  # placeholder
    raise NotImplementedError

