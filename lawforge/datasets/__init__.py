"""Dataset cards, loaders and synthetic generators."""

from lawforge.datasets.card import DatasetCard, bundled_card_paths, get_card, read_card
from lawforge.datasets.loader import (DataSplit, Dataset, data_available, load_dataset,
                                      load_published_constants)

__all__ = ["DatasetCard", "DataSplit", "Dataset", "bundled_card_paths", "data_available",
           "get_card", "load_dataset", "load_published_constants", "read_card"]
