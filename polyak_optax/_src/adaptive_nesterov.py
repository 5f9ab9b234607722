"""PLACEHOLDER: being written; replace this whole file."""

def AdaptiveNesterovState(*args, **kwargs):  # placeholder
    raise NotImplementedError

def adaptive_nesterov(*args, **kwargs):  # placeholder
    raise NotImplementedError

def scale_by_adaptive_nesterov(*args, **kwargs):  # placeholder
    raise NotImplementedError

