"""polyak_optax: Polyak-step Nesterov, layer-wise scaling, cyclical schedules and the LR range test.

Every public name is re-exported here from a private module under ``polyak_optax._src``.
"""

from polyak_optax._src.adaptive_nesterov import (
    AdaptiveNesterovState,
    adaptive_nesterov,
    scale_by_adaptive_nesterov,
)
from polyak_optax._src.layerwise import (
    layers_by_module,
    layerwise,
    layerwise_log_norm_factors,
    scale_by_layerwise_log_norm,
)
from polyak_optax._src.lr_range_test import (
    LRRangeTestResult,
    lr_range_test,
    plot_lr_range_test,
)
from polyak_optax._src.schedule_free_polyak import (
    PolyakStepState,
    scale_by_polyak_step,
    schedule_free_polyak,
)
from polyak_optax._src.schedule_free_polyak_adam import (
    AdamPolyakStepState,
    scale_by_adam_polyak_step,
    schedule_free_polyak_adam,
)
from polyak_optax._src.schedules import (
    cyclic_momentum_schedule,
    cyclic_schedule,
    onecycle_momentum_schedule,
    onecycle_schedule,
)
from polyak_optax._src.tuning_free_nesterov import (
    TuningFreeNesterovState,
    scale_by_tuning_free_nesterov,
    tuning_free_nesterov,
)

__version__ = "0.1.0"

__all__ = (
    "AdamPolyakStepState",
    "AdaptiveNesterovState",
    "LRRangeTestResult",
    "PolyakStepState",
    "TuningFreeNesterovState",
    "adaptive_nesterov",
    "cyclic_momentum_schedule",
    "cyclic_schedule",
    "layers_by_module",
    "layerwise",
    "layerwise_log_norm_factors",
    "lr_range_test",
    "onecycle_momentum_schedule",
    "onecycle_schedule",
    "plot_lr_range_test",
    "scale_by_adam_polyak_step",
    "scale_by_adaptive_nesterov",
    "scale_by_layerwise_log_norm",
    "scale_by_polyak_step",
    "scale_by_tuning_free_nesterov",
    "schedule_free_polyak",
    "schedule_free_polyak_adam",
    "tuning_free_nesterov",
)
