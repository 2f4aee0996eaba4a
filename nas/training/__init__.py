"""Training: the accuracy signals of the search and full training of a found network.

Modules, one noun each: ``data`` (data sets read from disk), ``pipeline`` (cached uint8 tensors and batches),
``fastpath`` (the exact tiny-map convs), ``loop`` (the one training loop: seeded build, optimizer and schedule,
steps with a divergence check, evaluation), ``proxy`` (short proxy training and its presets), ``zero_cost``
(NASWOT, synflow), ``resume`` (a training run's folder and checkpoint), ``train`` (full training).

The public functions are re-exported here lazily: importing the package imports neither torch nor numpy.
Full training's function is not among them: ``nas.training.train`` is its module (import
``from nas.training.train import train``), and a package attribute cannot be both.
"""

from __future__ import annotations

from nas._lazy import lazy_exports

__all__ = ["load_data", "proxy_train", "proxy_settings", "ProxySettings", "ProxyResult", "PROXY_PRESETS",
           "PROXY_RUNGS", "binomial_se", "zero_cost_score", "TrainSettings", "TrainResult"]

_HOME = {"load_data": "data", "proxy_train": "proxy", "proxy_settings": "proxy", "ProxySettings": "proxy",
         "ProxyResult": "proxy", "PROXY_PRESETS": "proxy",
         "PROXY_RUNGS": "proxy", "binomial_se": "proxy", "zero_cost_score": "zero_cost",
         "TrainSettings": "train", "TrainResult": "train"}


__getattr__, __dir__ = lazy_exports(__name__, {name: f"nas.training.{mod}" for name, mod in _HOME.items()})
