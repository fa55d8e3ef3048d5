"""The PyTorch engine (``multirnn_torch``): SimpleRNN, LSTM and GRU as ``torch.nn.Module``s.

Importing this package does not import torch; the layers live in ``multirnn_torch.layers``,
the functional entry in ``multirnn_torch.kernels``.
"""

from multirnn.engines import EngineInfo

ENGINE = EngineInfo(
    name="torch",
    module="multirnn_torch.layers",
    testing="multirnn_torch.testing",
    requires=("torch",),
    extra="torch",
    priority=30,
    description="PyTorch engine (torch.nn.Module layers; oneDNN/cuDNN fused kernels when eligible)",
)

__all__ = ["ENGINE"]
