"""The long-term feature bank (LFB): RoI features of a whole split on disk, memory-mapped for training.

Names are imported on first use, so ``import stdet.lfb`` does not import torch.
"""
from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".bank": ["BANK_FORMAT", "BankWriter", "FeatureBank", "FeatureBankError", "bank_nbytes", "bank_paths",
              "import_mmaction2", "merge_shards"],
})
