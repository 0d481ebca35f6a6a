"""Examples: the streaming collect pass and the on-disk FeatureStore."""

from labeler.examples.store import FeatureStore

__all__ = ["FeatureStore", "run_collect", "CollectConfig"]


def __getattr__(name: str):  # collect pulls in torch/transformers: import it only when asked
    if name in ("run_collect", "CollectConfig"):
        from labeler.examples import collect

        return getattr(collect, name)
    raise AttributeError(name)
