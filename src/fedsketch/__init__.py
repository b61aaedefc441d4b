"""fedsketch: federated sketched-LoRA fine-tuning with independent client sampling.

Implements *Adaptive Federated LoRA in Heterogeneous Wireless Networks with Independent
Sampling* (arXiv 2505.23555); equation numbers refer to ``shared/spec/PAPER.md``.

The math core (``config``, ``rng``, ``network``, ``sampling``, ``sketch``, ``aggregate``,
``strategies``) imports no torch; the training engine lives in ``fedsketch.engine``.
"""

__version__ = "0.1.0"
