"""PLACEHOLDER: being written; replace this whole file."""

def cyclic_schedule(*args, **kwargs):  # placeholder
    raise NotImplementedError

def onecycle_momentum_schedule(*args, **kwargs):  # placeholder
    raise NotImplementedError

def onecycle_schedule(*args, **kwargs):  # placeholder
    raise NotImplementedError

