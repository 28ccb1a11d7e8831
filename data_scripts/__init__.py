"""AVA data preparation scripts; run each as ``python data_scripts/NAME.py --help``."""
