"""labeler: automated feature labeling for sparse-autoencoder features.

Data flow (one sub-package per stage):
corpus -> activations -> examples -> explanation -> scoring -> db -> api / report
"""

__version__ = "0.1.0"
