"""mtfuse: multi-task learning and model fusion for pretrained encoders."""

__version__ = "0.1.0"
