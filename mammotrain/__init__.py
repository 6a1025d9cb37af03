"""mammotrain: streaming PyTorch training on mammoprep shards."""

__version__ = "0.1.0"
