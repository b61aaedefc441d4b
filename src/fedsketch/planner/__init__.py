"""Planner: round-time model, convergence bound, theta estimation and the joint q/k optimiser.

Implements PAPER.md §2.3–2.9 and Algorithm 2 (eqs. 9–26, Appendix C). Pure numpy/scipy/cvxpy;
imports no torch. The training engine is reached only through injected callables.
"""
