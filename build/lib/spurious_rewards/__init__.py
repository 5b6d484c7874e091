"""spurious_rewards: the Python side of the Spurious Rewards reproduction pipeline.

Every Snakemake rule and DVC stage calls the single ``spurious`` CLI
(:mod:`spurious_rewards.cli`), so the DAG files stay thin and every step can be
run by hand with the same arguments.
"""

__version__ = "0.1.0"
