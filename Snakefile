# =============================================================================
# spurious-rewards: reproduce and audit "Spurious Rewards: Rethinking Training
# Signals in RLVR" (Shao et al., 2025) from one config.
#   snakemake --cores all                                  # the CPU organism study
#   snakemake --configfile config/paper.yaml --profile profiles/slurm
# =============================================================================

from snakemake.utils import min_version

min_version("9.19")


# the default study; a --configfile on the command line replaces it (rather than
# merging into it, so config/paper.yaml does not inherit the toy models). A study
# that does inherit says so with `extends:` (config/organism-full.yaml, params.yaml),
# resolved in common.smk before validation.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# ----- config validation, wildcard constraints, input functions --------------
include: "workflow/rules/common.smk"
# ----- data: normalized datasets ---------------------------------------------
include: "workflow/rules/data.smk"
# ----- CPU model organisms (toy models with the paper's priors) --------------
include: "workflow/rules/organism.smk"
# ----- majority-vote and incorrect labels ------------------------------------
include: "workflow/rules/labels.smk"
# ----- GRPO training per (model, reward, variant, seed) -----------------------
include: "workflow/rules/train.smk"
# ----- evaluation of base models and checkpoints -----------------------------
include: "workflow/rules/evaluate.smk"
# ----- the audit: contamination, prompt-robust baselines, clipping bias --------
include: "workflow/rules/audit.smk"
# ----- the mechanism map: the clip probe over eps x updates x lr, checking runs
include: "workflow/rules/mechanism.smk"
# ----- tables, figures, summary.md and DVC metrics/plots ---------------------
include: "workflow/rules/aggregate.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),
