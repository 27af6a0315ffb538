"""The shortcut lab: does the model use a planted confounder, and which explanation shows it?

The phantom's chest drain (:mod:`chexlib.phantom.drain`) is a confounder of pneumothorax whose
pixels and counterfactual are known. Modules, one question each:

``subgroups``  which images carry the finding, the confounder, both or neither
``strata``     hidden stratification: AUROC and sensitivity per subgroup, patient intervals
``causal``     the causal test: each logit's change when the confounder is removed, per subgroup
``reveal``     each explanation's share of positive relevance on the confounder and on the finding,
               against the measured causal effect
``lab``        notebook 07's steps on a run: its subgroups, counterfactual inputs, effects and maps
``insights``   notebook 07's computed key insights, claiming only what the intervals support
"""

from chexlib.shortcut.causal import causal_table
from chexlib.shortcut.reveal import confounder_shares, reveal_table
from chexlib.shortcut.strata import strata_table
from chexlib.shortcut.subgroups import SUBGROUPS, drain_subgroups

__all__ = ["SUBGROUPS", "causal_table", "confounder_shares", "drain_subgroups",
           "reveal_table", "strata_table"]
